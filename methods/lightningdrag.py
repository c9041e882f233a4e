"""LightningDrag (LightningDrag/LightningDrag @73de513, ICML'25; protocols_2025.md §4): a trained drag model
on an SD 1.5 inpainting UNet, one sampling pass (`pipeline/lightningdrag_pipeline.py::__call__`).

1. The image LANCZOS-resized to area ≈ 512² with sides multiples of 64, the mask nearest-resized and
   binarised at 0.5, the points scaled to that frame as (row, col) (`utils/ui_utils.py`).
2. Condition: the "" text embedding plus IP-Adapter's 4 image tokens of the source (component
   `ip_adapter_sd15`, scale 1), the same in both halves of the batch.
3. UNet input: [latent, nearest-resized mask, VAE-sampled latent of image·(mask < 0.5)]; initial latent: a
   VAE posterior sample of the source, `add_noise(·, ε, t=999)`.
4. The appearance encoder (component `lightningdrag_sd15`) once at t = 0 on other VAE samples of the source
   with the "" embedding; its norm1 outputs extend every self-attention's K/V ("full" fusion).
5. Point maps → point embedding → added to query/key of every self-attention (zero in the unconditional half).
6. ε = ε_u + g_i(ε_c − ε_u), g_i by `guidance_decay` (inv_square: (g−1)(1−i/N)² + 1); scheduler step; decode.

RNG (Q-18): the release seeds the global torch RNG (`seed_everything`) and draws, in order, the masked-image
latent sample (1 image), the source posterior samples, the noise and the appearance samples (one per
candidate each), then the LCM scheduler's noise; it makes `candidates` (4) images and the app shows all.
Here the same draws come from a CPU generator seeded with the sample's seed (the CPU stream of
`torch.manual_seed`), and candidate 0 is the output.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from harness.diffusion.lightningdrag import DECAYS, guidance_at, point_map
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import DragSample, EditResult

PRESETS = {"ddim": dict(steps=25, guidance=4.0), "lcm": dict(steps=8, guidance=3.0)}


@dataclass
class LightningDragConfig:
    preset: str = "ddim"  # ddim (25 steps, g 4) | lcm (LCM-LoRA fused, LCMScheduler, 8 steps, g 3)
    steps: int | None = None  # null = the preset's
    guidance: float | None = None  # point guidance g; null = the preset's
    guidance_decay: str = "inv_square"
    candidates: int = 4  # images per call (the RNG stream depends on it); candidate 0 is the output
    allow_no_guidance: bool = False  # false = g ≤ 1 is refused (the release crashes); true = conditional half only
    size: int = 512  # resize to area ≈ size², sides multiples of 64
    component: str = "lightningdrag_sd15"
    ip_adapter: str = "ip_adapter_sd15"
    lora_component: str = "lcm_lora_sd15"  # fused for preset lcm

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"lightningdrag: preset must be one of {list(PRESETS)}, got {self.preset!r}")
        if self.guidance_decay not in DECAYS:
            raise ValueError(f"lightningdrag: guidance_decay must be one of {list(DECAYS)}, got {self.guidance_decay!r}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"lightningdrag: steps must be >= 1 (or null), got {self.steps}")
        if self.candidates < 1:
            raise ValueError(f"lightningdrag: candidates must be >= 1, got {self.candidates}")
        if self.size < 64 or self.size % 64:
            raise ValueError(f"lightningdrag: size must be a positive multiple of 64, got {self.size}")
        if self.scale <= 1.0 and not self.allow_no_guidance:
            raise ValueError(f"lightningdrag: guidance {self.scale} <= 1 fails in the release (Q-20: it still splits "
                             "the batch in two); set allow_no_guidance=true to run the conditional half alone")

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else PRESETS[self.preset]["steps"]

    @property
    def scale(self) -> float:
        return self.guidance if self.guidance is not None else PRESETS[self.preset]["guidance"]


def resized_size(width: int, height: int, size: int = 512) -> tuple[int, int]:
    """`ui_utils.py::__resize_divisible_by_64`: area ≈ size², each side rounded to a multiple of 64."""
    coef = math.sqrt(size * size / (height * width))
    return int(np.round(width * coef / 64.0)) * 64, int(np.round(height * coef / 64.0)) * 64


@METHODS.register("lightningdrag")
class LightningDrag(EditMethod):
    name = "lightningdrag"
    Config = LightningDragConfig

    def components(self) -> tuple[str, ...]:
        cfg = self.config
        return (cfg.component, cfg.ip_adapter) + ((cfg.lora_component,) if cfg.preset == "lcm" else ())

    def setup(self, models) -> None:
        import copy

        from diffusers import DDIMScheduler, LCMScheduler, StableDiffusionInpaintPipeline

        from harness.models.components import load_component

        if not isinstance(models.pipe, StableDiffusionInpaintPipeline):
            raise TypeError(f"lightningdrag needs an inpainting model (model@method.lightningdrag.model: dreamshaper8_inpaint, "
                            f"sd15_inpaint, random_sd15_inpaint or tiny_inpaint), got {models.spec.identity}")
        cfg = self.config
        self.models = models
        self.modules = load_component(cfg.component, models)
        self.ip = load_component(cfg.ip_adapter, models)
        base = models.pipe
        self.unet = base.unet
        if cfg.preset == "lcm":
            from harness.diffusion.lcm import lcm_inpaint_pipeline

            self.unet = lcm_inpaint_pipeline(models, load_component(cfg.lora_component, models), None).unet
            self.scheduler = LCMScheduler.from_config(base.scheduler.config)
        else:
            # the release builds DDIMScheduler from the base config and hands it to StableDiffusionPipeline's
            # __init__, which rewrites steps_offset to 1 and clip_sample to False (its deprecated-config fix)
            self.scheduler = DDIMScheduler.from_config(base.scheduler.config, steps_offset=1, clip_sample=False)
        self.scheduler = copy.deepcopy(self.scheduler)
        self.text = base.encode_prompt("", models.device, 1, False)[0]

    def _sample(self, vae, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`vae.encode(x).latent_dist.sample(generator)` × scaling factor."""
        return vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor

    @torch.no_grad()
    def edit(self, sample: DragSample, seed: int) -> EditResult:
        cfg, m = self.config, self.models
        device, dtype, vae = m.device, m.dtype, m.pipe.vae
        width, height = sample.size
        w, h = resized_size(width, height, cfg.size)
        image = np.array(Image.fromarray(sample.image).resize((w, h), Image.LANCZOS))
        mask = np.asarray(Image.fromarray(sample.editing_mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        scale = np.array([w / width, h / height])
        clip = np.array([w - 1, h - 1])
        handles = np.clip(np.round(sample.edit_handles * scale), 0, clip).astype(np.int64)[:, ::-1].copy()
        targets = np.clip(np.round(sample.edit_targets * scale), 0, clip).astype(np.int64)[:, ::-1].copy()

        n = cfg.candidates
        guided = cfg.scale > 1.0
        gen = torch.Generator().manual_seed(seed)
        pixels = 2.0 * torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0 - 1.0  # the release's float32 input
        # the IP image: the release turns that tensor back into uint8 by truncation, 127.5·(x+1)
        ip_image = (127.5 * (pixels[0].permute(1, 2, 0) + 1)).numpy().astype(np.uint8)
        pixels = pixels.to(device, dtype)
        mask_t = torch.from_numpy(mask.astype(np.float32))[None, None].to(device, dtype)
        masked_latent = self._sample(vae, pixels * (mask_t < 0.5), gen).repeat(n, 1, 1, 1)
        mask_latent = torch.nn.functional.interpolate(mask_t, size=(h // 8, w // 8)).repeat(n, 1, 1, 1)
        batch = pixels.repeat(n, 1, 1, 1)
        sched = self.scheduler
        sched.set_timesteps(cfg.num_steps, device=device)
        source = self._sample(vae, batch, gen)
        noise = torch.randn(source.shape, generator=gen, dtype=source.dtype).to(device)
        latents = sched.add_noise(source, noise, torch.tensor([999]))
        appearance = self._sample(vae, batch, gen)

        halves = 2 if guided else 1
        ip_embeds = self.ip.image_embeds(ip_image, with_uncond=False).to(dtype).repeat(n * halves, 1, 1)
        text = self.text.repeat(n * halves, 1, 1)
        maps = [point_map(torch.from_numpy(p).to(device), h, w).to(dtype)[None, None] for p in (handles, targets)]
        handle, target = self.modules.point_embedding(*maps)
        if guided:
            handle = [torch.cat([torch.zeros_like(x.repeat(n, 1, 1, 1)), x.repeat(n, 1, 1, 1)]) for x in handle]
            target = [torch.cat([torch.zeros_like(x.repeat(n, 1, 1, 1)), x.repeat(n, 1, 1, 1)]) for x in target]
        else:
            handle, target = [x.repeat(n, 1, 1, 1) for x in handle], [x.repeat(n, 1, 1, 1) for x in target]
        bank = self.modules.record_bank(appearance.repeat(halves, 1, 1, 1), text[:, : self.text.shape[1]])
        uc_mask = torch.tensor([True] * n * (halves - 1) + [False] * n, device=device)
        accepted = inspect.signature(sched.step).parameters  # the release's `prepare_extra_step_kwargs`
        step_kwargs = {k: v for k, v in (("eta", 0.0), ("generator", gen)) if k in accepted}
        guidance = []
        with self.ip.attached(self.unet, 1.0), self.modules.attached(self.unet) as state:
            state.bank, state.handle, state.target, state.uc_mask = bank, handle, target, uc_mask
            steps = len(sched.timesteps)
            for i, t in enumerate(sched.timesteps):
                x = torch.cat([sched.scale_model_input(latents, t), mask_latent, masked_latent], dim=1).repeat(halves, 1, 1, 1)
                eps = self.unet(x, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [ip_embeds]},
                                return_dict=False)[0]
                if guided:
                    g = guidance_at(cfg.scale, cfg.guidance_decay, i, steps)
                    uncond, cond = eps.chunk(2)
                    eps = uncond + g * (cond - uncond)
                    guidance.append(g)
                latents = sched.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
        decoded = vae.decode(latents[:1] / vae.config.scaling_factor, return_dict=False)[0]
        out = ((decoded[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()
        out = (out * 255).astype(np.uint8)  # the release's (x·255).astype(uint8) of the [0,1] output
        if (w, h) != (width, height):
            out = np.asarray(Image.fromarray(out).resize((width, height), Image.LANCZOS))
        info = {"preset": cfg.preset, "steps": cfg.num_steps, "guidance": guidance, "candidates": n,
                "resized": [w, h], "denoising_timesteps": [int(t) for t in sched.timesteps]}
        return EditResult(image=np.ascontiguousarray(out), info=info)
