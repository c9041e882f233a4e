"""RegionDrag (Visual-AI/RegionDrag @5cf4922, "Encode then CP", protocols.md §3.1).

1. Region pairs → dense handle/target pairs (`harness.regions`), divided by 8 (floor) onto the latent grid.
2. Cycle-SDE inversion of the VAE latent (`latent_dist.sample()`) from t = 50 to t = start_t·1000 + 50 over
   the DPM-Solver timestep list, recording every self-attention K/V.
3. Handle "blur": the start latent at the handle points becomes √(1−α²)·z + α·ε.
4. Denoising over `timesteps[steps−start−1 : −1]` with the cached noise; before each step the inversion
   latent is copy-pasted handle → target (gated, see `copy_paste_gate`), the latent outside the mask is
   reset to the inversion latent, and every self-attention K/V is replaced by the recorded one.
5. Decode (truncating ×255), `cv2.resize` back to H×W, composite with the source outside the mask.

`copy_paste_gate`:
- `as_released`: the released code compares timestep *values* with `int(end_t·steps)` = 4, so copy-paste
  runs at every denoising step (the published numbers);
- `paper`: copy-paste while t ≥ end_t·1000 (t″ = 0.2 → 8 of 10 steps);
- `first_step`: only at the first denoising step (the copy-paste timing ablation's extreme).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from harness.diffusion.attention import KVBank
from harness.diffusion.cycle_sde import CycleSDE
from harness.diffusion.latents import decode_to_uint8, encode
from harness.diffusion.numerics import FiniteWatch
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import DragSample, EditResult

GATES = ("as_released", "paper", "first_step")
# `ip_adapter` values → component config (conf/component/<name>.yaml); `off` loads none
IP_ADAPTERS = {"plus": "ip_adapter_plus_sd15", "off": None}


@dataclass
class RegionDragConfig:
    steps: int = 20
    start_t: float = 0.5
    end_t: float = 0.2
    noise_scale: float = 1.0  # α of the handle blur: 1.0 for evaluation, 0.6 in the UI
    copy_paste_gate: str = "as_released"
    # IP-Adapter Plus with the source image as image prompt, as the release always loads it
    # (`cycle_sde.py::load_model`); `off` is the plain UNet (the output before IP-Adapter existed here)
    ip_adapter: str = "plus"
    ip_adapter_scale: float = 0.5
    # what the image tokens are: `as_released` passes [zero image, source] embeddings to the batch-1 UNet
    # call (get_eps keeps `v[-1:]` of a one-element list), so diffusers' IP processor attends to both (32
    # tokens for Plus); `source` passes the source image's tokens only (16)
    ip_adapter_tokens: str = "as_released"
    cuda_graphs: bool = True  # replay the UNet calls as CUDA graphs on a GPU (identical outputs, less overhead)
    # equal-size samples per UNet call. 1 = one at a time, bit-identical to the reference code; more changes
    # fp16 rounding (other kernel tilings) and makes the per-sample time a share of the batch's
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.copy_paste_gate not in GATES:
            raise ValueError(f"regiondrag: copy_paste_gate must be one of {GATES}, got {self.copy_paste_gate!r}")
        if not 0 < self.start_t < 1 or not 0 <= self.end_t <= self.start_t:
            raise ValueError(f"regiondrag: need 0 <= end_t <= start_t < 1, got start_t={self.start_t}, "
                             f"end_t={self.end_t}")
        if int(self.start_t * self.steps) < 1:
            # start_t < 1 keeps int(start_t·steps) <= steps − 1: the denoising slice starts one grid step above
            # the inversion's last timestep, and there is none above the first.
            raise ValueError(f"regiondrag: method.regiondrag.steps={self.steps} with start_t={self.start_t} gives "
                             f"int(start_t · steps) = 0 inversion and denoising steps, so nothing is dragged; need "
                             f"steps >= {min_steps(self.start_t)} for start_t={self.start_t}")
        if self.batch_size < 1:
            raise ValueError(f"regiondrag: batch_size must be >= 1, got {self.batch_size}")
        if self.ip_adapter not in IP_ADAPTERS:
            raise ValueError(f"regiondrag: ip_adapter must be one of {sorted(IP_ADAPTERS)}, got {self.ip_adapter!r}")
        if self.ip_adapter_tokens not in ("as_released", "source"):
            raise ValueError(f"regiondrag: ip_adapter_tokens must be 'as_released' or 'source', got {self.ip_adapter_tokens!r}")


def min_steps(start_t: float) -> int:
    """The fewest `steps` with at least one inversion step, int(start_t · steps) >= 1 (0 < start_t < 1)."""
    steps = max(1, math.ceil(1 / start_t))
    while int(start_t * steps) < 1:  # float rounding: 0.1 · 10 may fall short of 1
        steps += 1
    return steps


def latent_points(points: np.ndarray, latent_hw: tuple[int, int]) -> tuple[torch.Tensor, int]:
    """Pixel (x, y) → latent indices by floor division, as `drag()` does; clip to the grid (the reference
    would index out of bounds for points in the rows a non-multiple-of-8 height loses)."""
    idx = np.floor_divide(points.astype(np.int64), 8)
    clipped = np.clip(idx, 0, [latent_hw[1] - 1, latent_hw[0] - 1])
    return torch.from_numpy(clipped), int((clipped != idx).any(axis=1).sum())


@METHODS.register("regiondrag")
class RegionDrag(EditMethod):
    name = "regiondrag"
    Config = RegionDragConfig
    runtime_fields = ("cuda_graphs",)
    key_omits_default = ("batch_size", "ip_adapter_scale", "ip_adapter_tokens")
    max_cached_shapes = 4

    def components(self) -> tuple[str, ...]:
        name = IP_ADAPTERS[self.config.ip_adapter]
        return (name,) if name else ()

    def setup(self, models) -> None:
        from harness.models.components import load_component

        self.models = models
        self.sde, self.timesteps = CycleSDE.on_dpm_solver_grid(models.scheduler_config, self.config.steps)
        self._runners: dict[tuple[int, ...], tuple] = {}
        self.ip = load_component(self.components()[0], models) if self.components() else None

    def _image_embeds(self, samples: list[DragSample]) -> tuple[torch.Tensor, ...]:
        """The UNet's extra condition per call: () without IP-Adapter, else the image embeddings of the
        source images, per sample [zero image, source] (`as_released`) or [source]."""
        if self.ip is None:
            return ()
        with_uncond = self.config.ip_adapter_tokens == "as_released"
        return (torch.cat([self.ip.image_embeds(np.array(s.image), with_uncond) for s in samples]).to(self.models.dtype),)

    def _unet_runners(self, latent: torch.Tensor, cond: tuple[torch.Tensor, ...], n_slots: int):
        """(bank, eps_capture, eps_paste) for this latent shape: UNet calls that record K/V into the bank's
        current slot, and calls that replace K/V by it. On a GPU they are CUDA graphs, cached per shape."""
        m = self.models
        key = (*latent.shape, n_slots, *(c.shape[0] for c in cond))
        if key in self._runners:
            return self._runners[key]
        bank = KVBank(m.unet, n_slots)

        def call(mode):
            def run(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, *image: torch.Tensor) -> torch.Tensor:
                extra = {"added_cond_kwargs": {"image_embeds": list(image)}} if image else {}
                with (bank.capture() if mode == "capture" else bank.paste()):
                    return m.unet(x, t, encoder_hidden_states=text, **extra).sample
            return run

        if not (self.config.cuda_graphs and m.device.type == "cuda"):
            runners = (bank, call("capture"), call("paste"))
        else:
            from harness.diffusion.graphs import GraphedCall

            t = torch.tensor(500, device=m.device)
            capture = GraphedCall(call("capture"), (latent, t, *cond))
            paste = GraphedCall(call("paste"), (latent, t, *cond))
            if len(self._runners) >= self.max_cached_shapes:
                self._runners.pop(next(iter(self._runners)))
                torch.cuda.empty_cache()
            runners = (bank, capture, paste)
        self._runners[key] = runners
        return runners

    def _gate(self, t: int, first: bool) -> bool:
        gate = self.config.copy_paste_gate
        if gate == "as_released":
            return t >= int(self.config.end_t * self.config.steps)
        if gate == "paper":
            return t >= self.config.end_t * 1000
        return first

    def max_batch(self) -> int:
        return self.config.batch_size

    def edit(self, sample: DragSample, seed: int) -> EditResult:
        return self.edit_batch([sample], seed)[0]

    @torch.no_grad()
    def edit_batch(self, samples: list[DragSample], seed: int) -> list[EditResult]:
        if self.ip is None:
            return self._edit_batch(samples, seed)
        with self.ip.attached(self.models.unet, self.config.ip_adapter_scale):
            return self._edit_batch(samples, seed)

    def _edit_batch(self, samples: list[DragSample], seed: int) -> list[EditResult]:
        """Equal-size samples through one UNet call per step. Every random draw comes from the sample's own
        generator in the order a lone edit makes it (VAE sample, inversion noise, handle blur), so a batch of
        one is the single-sample edit, and larger batches differ from it by rounding only."""
        m, cfg = self.models, self.config
        device, dtype = m.device, m.dtype
        generators = [torch.Generator(device=device).manual_seed(seed) for _ in samples]
        latent = torch.cat([encode(m.vae, s.image, g, dtype) for s, g in zip(samples, generators)])
        lh, lw = latent.shape[-2:]
        pairs, n_clipped = [], []
        for sample in samples:
            source, n_clipped_src = latent_points(sample.edit_handles, (lh, lw))
            target, n_clipped_trg = latent_points(sample.edit_targets, (lh, lw))
            pairs.append((source.to(device), target.to(device)))
            n_clipped.append(n_clipped_src + n_clipped_trg)
        text = torch.cat([m.encode_prompt(s.prompt) for s in samples])
        cond = (text, *self._image_embeds(samples))
        mask = torch.cat([F.interpolate(torch.from_numpy(s.editing_mask.astype(np.uint8))[None, None].to(device),
                                        size=(lh, lw)) for s in samples]).expand_as(latent) == 1

        start = int(cfg.start_t * cfg.steps)
        t0 = time.perf_counter()
        bank, unet_capture, unet_paste = self._unet_runners(latent, cond, start)
        timestep = torch.zeros((), dtype=torch.long, device=device)

        def eps_with(unet_call):
            def eps(x: torch.Tensor, t: int) -> torch.Tensor:
                timestep.fill_(t)
                return unet_call(x, timestep, *cond)
            return eps

        trajectory, noises = [latent], []
        finite = FiniteWatch()
        x = latent
        for i, t in enumerate(reversed(self.timesteps[cfg.steps - start:])):
            bank.set_slot(i)
            x, w_noise = self.sde.forward_step(eps_with(unet_capture), x, t, generators)
            finite.watch(x, "inversion", i, t)
            trajectory.append(x)
            noises.append(w_noise)

        x = trajectory[-1].clone()
        keep = (1 - cfg.noise_scale ** 2) ** 0.5 if cfg.noise_scale < 1 else 0
        for b, (source, _) in enumerate(pairs):
            handle_latents = x[b, :, source[:, 1], source[:, 0]]
            blur = torch.randn(handle_latents.shape, generator=generators[b], device=device, dtype=dtype)
            x[b, :, source[:, 1], source[:, 0]] = handle_latents * keep + blur * cfg.noise_scale

        pasted_steps = []
        for i, t in enumerate(self.timesteps[cfg.steps - start - 1 : -1]):
            bank.set_slot(start - 1 - i)  # denoising step i undoes inversion step start-1-i
            reference = trajectory.pop()
            if self._gate(t, first=i == 0):
                for b, (source, target) in enumerate(pairs):
                    x[b, :, target[:, 1], target[:, 0]] = reference[b, :, source[:, 1], source[:, 0]]
                pasted_steps.append(t)
            x = torch.where(mask, x, reference)
            x = finite.watch(self.sde.reverse_step(eps_with(unet_paste), x, t, noises.pop()), "denoising", i, t)
        finite.raise_first()
        t_loop = time.perf_counter() - t0

        results = []
        for b, sample in enumerate(samples):
            numerics: dict = {}
            h, w = sample.image.shape[:2]
            image = cv2.resize(decode_to_uint8(m.vae, x[b:b + 1], numerics), (w, h))
            edit_mask = sample.editing_mask
            if not edit_mask.all():
                image = np.where(edit_mask[:, :, None], image, sample.image)
            info = {
                "inversion_timesteps": [self.sde.up(t) for t in reversed(self.timesteps[cfg.steps - start:])],
                "denoising_timesteps": self.timesteps[cfg.steps - start - 1 : -1],
                "copy_paste_timesteps": pasted_steps,
                "latent_size": [int(lh), int(lw)],
                "dense_pairs": int(len(pairs[b][0])),
                "points_clipped_to_latent": n_clipped[b],
                **numerics,
            }
            results.append(EditResult(image=np.ascontiguousarray(image), timings={"diffusion_loop": t_loop}, info=info))
        return results
