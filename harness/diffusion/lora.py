"""LoRA fitting on one image (DragDiffusion's `train_lora` and its descendants), through peft, with a cache.

What the released trainers do, and what `LoraSpec` reproduces:
- LoRA on `to_q`, `to_k`, `to_v`, `to_out.0` of every UNet attention (self and cross), scale 1 (diffusers'
  `LoRALinearLayer` has no alpha: `lora_alpha = rank` here), down-projection initialised N(0, 1/rank),
  up-projection zero (peft's `init_lora_weights="gaussian"`);
- DDPM noise-prediction MSE at uniformly drawn timesteps, the text condition being the prompt;
- AdamW (β 0.9/0.999, weight decay 1e-2, ε 1e-8) at a constant learning rate; fp16 autocast with a
  gradient scaler on CUDA (accelerate's `mixed_precision='fp16'`), LoRA weights kept in float32;
- data (`augment`):
  * `per_step` — DragDiffusion ≥ 2023-09-07, DragNoise, FreeDrag: every step draws `batch_size` fresh
    crops (resize the shorter side to `resolution`, bilinear, then a random `resolution`² crop);
  * `once` — GoodDrag: one batch of such crops is drawn and encoded once; steps resample the latent;
  * `none` — SDE-Drag: the image at its own size, batch 1, encoded once.
  The VAE latent is `latent_dist.sample() · scaling_factor` at every step.

The seed (`seed`, 0 as `set_seed(0)` in the released trainers) drives crops, noise and timesteps through
explicit generators, so a fit is reproducible but not bit-identical to the reference's global RNG stream.

Fitted weights are cached as safetensors under `<cache_dir>/lora/`, keyed by everything that changes
them: the image bytes, the prompt, the model identity, dtype and device type, the VAE, and the spec.
Sweeps over drag hyperparameters then fit each LoRA once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from harness.determinism import seeded_global_rng
from harness.diffusion.graphed_grad import GradGraphs, graphs_enabled
from harness.diffusion.precision import autocast, grad_scaler
from harness.diffusion.timing import Stopwatch
from harness.paths import cache_dir

ADAPTER = "editlab_lora"
LORA_PROFILES = ("auto", "published", "fast")
# The fast LoRA profile: what the demo and the tiny random models use (`lora_profile: auto`). The published
# trainers upsample every image to 512² and fit for 60–200 steps, which is most of a drag edit on a CPU and
# teaches a random-weight model nothing; the fast profile fits at 128² (the demo's images are ≤ 112 px), one
# crop per step, for 10 steps, so the LoRA code path still runs end to end. Drag steps are never changed.
FAST_LORA = {"lora_steps": 10, "lora_resolution": 128, "lora_batch_size": 1}
FAST_LORA_ARCHS = ("tiny", "tiny_sd21")  # random-weight CPU models (conf/model/tiny*.yaml)
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
AUGMENTS = ("per_step", "once", "none")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 16
    steps: int = 80
    lr: float = 5e-4
    batch_size: int = 4
    augment: str = "per_step"
    resolution: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"LoRA augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.steps < 0 or self.rank < 1 or self.batch_size < 1 or self.resolution < 8:
            raise ValueError(f"invalid LoRA spec {self}")


@dataclass
class LoraWeights:
    """The outcome of the LoRA stage: weights (None when `steps == 0`), fit seconds (0 on a cache hit)."""

    state: dict[str, torch.Tensor] | None
    rank: int
    seconds: float
    cache: str  # "hit" | "miss" | "off" | "none"
    key: str = ""

    def info(self) -> dict[str, Any]:
        return {"lora_cache": self.cache, "lora_key": self.key}


def resolve_lora_profile(method: str, params: Mapping[str, Any], model: Any) -> tuple[dict[str, Any], str | None]:
    """The method config a run uses on `model` (a `ModelSpec`). `lora_profile: auto` becomes `fast` on the
    tiny random models and otherwise stays `auto`, which, like `published`, runs the LoRA fields as
    configured (and, being the default, keeps the store keys that runs had before profiles existed); `fast`
    sets the `FAST_LORA` fields whatever they were. The resolved profile and values are part of the config,
    hence of the store key: outputs of one profile are never reused for another. Returns the params and,
    for `fast`, a line for the run output."""
    params = dict(params)
    profile = params.get("lora_profile", "auto")
    if profile not in LORA_PROFILES:
        raise ValueError(f"{method}: lora_profile must be one of {LORA_PROFILES}, got {profile!r}")
    tiny = getattr(model, "source", None) == "random" and getattr(model, "arch", None) in FAST_LORA_ARCHS
    if profile == "published" or (profile == "auto" and not tiny):
        return params, None
    configured = ", ".join(f"{k} {'(preset)' if params.get(k) is None else params.get(k)}" for k in FAST_LORA)
    params.update(FAST_LORA, lora_profile="fast")
    why = "the model is the tiny random-weight one" if profile == "auto" else "lora_profile=fast"
    return params, (f"fast LoRA profile ({', '.join(f'{k} {v}' for k, v in FAST_LORA.items())}; configured: "
                    f"{configured}) because {why}; method.{method}.lora_profile=published runs the configured LoRA")


def _lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, target_modules=list(TARGET_MODULES), init_lora_weights="gaussian")


def _remove_adapter(unet) -> None:
    if set(getattr(unet, "peft_config", {}) or {}) == {ADAPTER}:
        unet.unload_lora()  # restores the plain Linear modules
    else:
        unet.delete_adapters(ADAPTER)


def _lora_parameters(unet) -> list[torch.nn.Parameter]:
    return [p for name, p in unet.named_parameters() if f".{ADAPTER}." in name]


@contextlib.contextmanager
def use_lora(unet, weights: LoraWeights | None, dtype: torch.dtype | None = None) -> Iterator[None]:
    """Attach the weights to the (shared) UNet for the duration of the block, frozen, in `dtype`."""
    if weights is None or weights.state is None:
        yield
        return
    from peft import set_peft_model_state_dict

    unet.add_adapter(_lora_config(weights.rank), adapter_name=ADAPTER)
    try:
        result = set_peft_model_state_dict(unet, weights.state, adapter_name=ADAPTER)
        if result.unexpected_keys:
            raise ValueError(f"LoRA weights do not fit this UNet: unexpected keys {result.unexpected_keys[:3]}…")
        for p in _lora_parameters(unet):
            p.requires_grad_(False)
            p.data = p.data.to(dtype or unet.dtype)
        yield
    finally:
        _remove_adapter(unet)


def _resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision `Resize(size)` on a PIL image: the shorter side becomes `size`, the longer
    `int(size · long / short)`, PIL bilinear."""
    from PIL import Image

    h, w = image.shape[:2]
    if min(h, w) == size:
        return image
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def _random_crop(image: np.ndarray, size: int, generator: torch.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return image[top:top + size, left:left + size]


def _training_images(resized: np.ndarray, spec: LoraSpec, generator: torch.Generator) -> np.ndarray:
    """One step's batch from the image already resized by `_resize_short_side` (unresized for `none`)."""
    if spec.augment == "none":
        return resized[None]
    return np.stack([_random_crop(resized, spec.resolution, generator) for _ in range(spec.batch_size)])


class _Encoder:
    """The VAE's latent distribution of a batch of uint8 images; the encoder call replayed from a CUDA graph
    (fixed shape within a fit: same kernels, so the same moments) when training graphs are on."""

    def __init__(self, vae) -> None:
        self.vae, self.graphed = vae, None
        self.replays = graphs_enabled(vae.device)

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.parameters

    @torch.no_grad()
    def __call__(self, images: np.ndarray):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        x = torch.from_numpy(np.array(images)).to(self.vae.device).permute(0, 3, 1, 2).to(torch.float32) / 255.0 * 2 - 1
        x = x.to(self.vae.dtype)
        if not self.replays:
            return self.vae.encode(x).latent_dist
        if self.graphed is None or self.graphed.static_inputs[0].shape != x.shape:
            from harness.diffusion.graphs import GraphedCall

            self.graphed = GraphedCall(self._moments, (x,))
        return DiagonalGaussianDistribution(self.graphed(x).clone())


def _predict(unet, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The UNet's noise prediction under the trainer's fp16 autocast (replayable: `GradGraphs`)."""
    with autocast(noisy.device):
        return unet(noisy, timesteps, encoder_hidden_states=text.expand(noisy.shape[0], -1, -1)).sample


def fit_lora(models, vae, image: np.ndarray, prompt: str, spec: LoraSpec) -> dict[str, torch.Tensor]:
    """Fit a LoRA on one image and return its peft state dict (float32, CPU). The UNet is left as found."""
    from diffusers import DDPMScheduler
    from peft import get_peft_model_state_dict

    unet, device = models.unet, models.device
    crops = torch.Generator().manual_seed(spec.seed)
    noise_gen = torch.Generator(device=device).manual_seed(spec.seed)
    scheduler = DDPMScheduler.from_config(models.scheduler_config)
    text = models.encode_prompt(prompt)
    resized = image if spec.augment == "none" else _resize_short_side(image, spec.resolution)
    encoder = _Encoder(vae)
    dist = None if spec.augment == "per_step" else encoder(_training_images(resized, spec, crops))

    # peft draws the initial down-projections from the global generator: seed it, and leave it as found
    with seeded_global_rng(spec.seed):
        unet.add_adapter(_lora_config(spec.rank), adapter_name=ADAPTER)
    try:
        params = _lora_parameters(unet)
        for p in params:  # float32 master weights, as accelerate keeps them
            p.data = p.data.float()
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=spec.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        scaler = grad_scaler(device)
        predict = GradGraphs(lambda noisy, t: _predict(unet, noisy, t, text), params)
        for _ in range(spec.steps):
            step_dist = dist if dist is not None else encoder(_training_images(resized, spec, crops))
            latents = step_dist.sample(generator=noise_gen).float() * vae.config.scaling_factor
            noise = torch.randn(latents.shape, generator=noise_gen, device=device)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      generator=noise_gen, device=device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            if scheduler.config.prediction_type == "v_prediction":
                target = scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            prediction = predict(noisy.to(models.dtype), timesteps)
            loss = F.mse_loss(prediction.float(), target.float())
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        del predict  # its graphs hold the adapter's parameters and activations
        state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
        return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    finally:
        _remove_adapter(unet)


def lora_key(image: np.ndarray, prompt: str, model_identity: dict[str, Any], vae_id: str, spec: LoraSpec) -> str:
    payload = {
        "image_sha256": hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest(),
        "image_shape": list(image.shape),
        "prompt": prompt,
        "model": model_identity,
        "vae": vae_id,
        "spec": asdict(spec),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def lora_cache_dir() -> Path:
    path = cache_dir() / "lora"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lora_for_image(models, vae, vae_id: str, image: np.ndarray, prompt: str, spec: LoraSpec,
                   use_cache: bool = True) -> LoraWeights:
    """The LoRA stage of a drag method: from the cache when possible, otherwise fitted (and stored)."""
    if spec.steps == 0:
        return LoraWeights(None, spec.rank, 0.0, "none")
    from safetensors.torch import load_file, save

    from harness.store import atomic_write_bytes

    identity = {"identity": models.spec.identity, "dtype": str(models.dtype).replace("torch.", ""),
                "device": models.device.type}
    key = lora_key(image, prompt, identity, vae_id, spec)
    path = lora_cache_dir() / f"{key}.safetensors"
    if use_cache and path.exists():
        return LoraWeights(load_file(str(path)), spec.rank, 0.0, "hit", key)
    timings: dict[str, float] = {}
    with Stopwatch(models.device, timings)("lora"):
        state = fit_lora(models, vae, image, prompt, spec)
    if use_cache:
        metadata = {"spec": json.dumps(asdict(spec)), "model": json.dumps(identity), "vae": vae_id, "prompt": prompt}
        atomic_write_bytes(path, save(state, metadata=metadata))
    return LoraWeights(state, spec.rank, timings["lora"], "miss" if use_cache else "off", key)
