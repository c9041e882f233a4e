"""DiffEditor (CVPR'24) and DragonDiffusion (ICLR'24): one release, two algorithm switches
(MC-E/DragonDiffusion @f9b5bdf, `src/demo/model.py::run_drag`, `src/models/Sampler.py::edit`;
protocols_2025.md §5). `method=diffeditor` is `alg: D+`, `method=dragondiffusion` is `alg: D`.

1. Resize to an area of about `resolution`² (sides multiples of 64, Lanczos-4); points × the *width* ratio
   (`point_scale: width`, as released; `per_axis` scales y by the height ratio). Q-22 (h/w swapped in
   the release's variable names) changes nothing that runs, so it has no switch.
2. Image prompt: the input resized to 256² (PIL), CLIP ViT-H penultimate states → Resampler (64 tokens);
   unconditional prompt from a zero image (component `ip_adapter`, `off` drops the image branch).
3. 50-step DDIM inversion with the prompt only (no image prompt), recording the up-block self-attention
   K/V of every step (`harness.diffusion.image_prompt_bank`).
4. `process_drag` (`harness.diffusion.energy_guidance`): 3×3 feature boxes at handle//4 and target//4
   (Q-23 `clip_x_by: height`), and z_T edited in place (the target patches take the handle patches; the
   inversion list holds that edited z_T, so step 0's reference features see it too).
5. 50 steps, guidance 4 on ["" + zero-image prompt; prompt + image prompt]; the image term (scale 0.1)
   only for 10 ≤ i < 20; from i = 5 the up-block self-attention attends over [own K/V, inversion K/V].
   Energy guidance (estimator = the plain UNet with the prompt, up_blocks.1/2 nearest-upsampled to 2×
   latent size; energy 2·1e3, w_edit/content/inpaint 4/6/0.2) when i < 30 and (i even or i < 10)
   [`D`: every i < 30]; x0 from the guided ε, direction from the unguided one. For 10 < i < 20 [`D+`]:
   regional SDE, σ = 0.4·√var inside the mask. For 20 < i < 30, i even [`D+`]: time travel, the step
   repeated 3× with one inverse-DDIM renoise (prompt only, no guidance, image prompt or bank) between.
6. Decode, bilinearly resized back to the source size (the release returns its working size), rounded.

The SDE noise comes from a generator seeded with the run's seed (the release: the global stream after
`seed_everything(seed)`, UI default 42).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from harness.diffusion.attention_control import controlled_attention
from harness.diffusion.energy_guidance import (CLIP_X_BY, PATCH_BORDERS, DragWeights, copy_latent_patches, drag_boxes, drag_energy,
                                               guidance_from_energy, upsampled)
from harness.diffusion.features import BlockTap, unet_through_up_block
from harness.diffusion.kv_bank import up_blocks
from harness.diffusion.latents import decode, encode, to_uint8
from harness.diffusion.lora import FAST_LORA_ARCHS
from harness.diffusion.timing import Stopwatch
from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import DragSample, EditResult

ALGS = ("D+", "D")
PROFILES = ("auto", "published", "fast")
FAST_RESOLUTION = 128  # the tiny random models: attention over 96² latent tokens is out of reach on a CPU


@dataclass
class DiffEditorConfig:
    METHOD: ClassVar[str] = "diffeditor"

    alg: str = "D+"  # D+ = DiffEditor, D = DragonDiffusion
    steps: int = 50
    guidance_scale: float = 4.0
    energy_scale: float = 2.0  # UI value; ×1e3 inside
    resolution: int = 768  # working area ≈ resolution²
    resolution_profile: str = "auto"  # auto: FAST_RESOLUTION on the tiny random models | published | fast
    w_edit: float = 4.0
    w_content: float = 6.0
    w_inpaint: float = 0.2
    sde_strength: float = 0.4
    ip_scale: float = 0.1
    ip_adapter: str = "diffeditor_ip_sd15"  # component, or off
    use_sample_prompt: bool = True
    clip_x_by: str = "height"
    point_scale: str = "width"  # width (released) | per_axis
    latent_patch_border: str = "as_released"  # as_released (a patch on the last latent row/column fails) | clamp

    def __post_init__(self) -> None:
        name = self.METHOD
        for key, allowed in (("alg", ALGS), ("clip_x_by", CLIP_X_BY), ("point_scale", ("width", "per_axis")),
                             ("resolution_profile", PROFILES), ("latent_patch_border", PATCH_BORDERS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{name}: {key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.steps < 1 or self.resolution < 64:  # the schedule is in step indices (i < 30 …), as released
            raise ValueError(f"{name}: steps must be ≥ 1 and resolution ≥ 64, got {self.steps}, {self.resolution}")


def resize_to_area(image: np.ndarray, side: int) -> tuple[np.ndarray, float, float]:
    """`resize_numpy_image`: scale to area side², round each side to a multiple of 64, Lanczos-4; returns
    the image and the width and height ratios."""
    import cv2

    h, w = image.shape[:2]
    k = (side * side / (h * w)) ** 0.5
    new_h, new_w = int(np.round(h * k / 64)) * 64, int(np.round(w * k / 64)) * 64
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LANCZOS4), new_w / w, new_h / h


@METHODS.register("diffeditor")
class DiffEditor(EditMethod):
    name = "diffeditor"
    families = ("drag",)
    Config = DiffEditorConfig

    @classmethod
    def for_model(cls, params, model):
        """`resolution_profile`: `auto` becomes `fast` (working resolution FAST_RESOLUTION) on the tiny
        random models, as the LoRA methods' fast profile; the resolved values join the store key."""
        params = dict(params)
        profile = params.get("resolution_profile", "auto")
        tiny = getattr(model, "source", None) == "random" and getattr(model, "arch", None) in FAST_LORA_ARCHS
        if profile == "fast" or (profile == "auto" and tiny):
            configured = params.get("resolution", 768)
            # at 128 px, points within 32 px of the bottom/right edge land on the last latent row/column, where
            # the release's patch copy fails (at 768 only within 5 px): the fast profile moves them inside
            params.update(resolution=FAST_RESOLUTION, resolution_profile="fast", latent_patch_border="clamp")
            return params, (f"working resolution {FAST_RESOLUTION}, latent_patch_border clamp (fast profile; configured "
                            f"{configured}); method.{cls.name}.resolution_profile=published keeps the configured ones")
        return params, None

    def components(self) -> tuple[str, ...]:
        return () if self.config.ip_adapter == "off" else (self.config.ip_adapter,)

    def setup(self, models) -> None:
        from harness.diffusion.ddim_inversion import DDIMSchedule
        from harness.diffusion.image_prompt_bank import ImagePromptBank, ip_layers_by_block
        from harness.models.components import load_component

        self.models = models
        self.ddim = DDIMSchedule.from_model_config(models.scheduler_config, self.config.steps)
        self.alphas = self.ddim.alphas_cumprod.float()
        self.adapter = None if self.config.ip_adapter == "off" else load_component(self.config.ip_adapter, models)
        layers = ip_layers_by_block(models.unet, self.adapter) if self.adapter else {}
        self.control = ImagePromptBank(up_blocks(models.unet), layers, from_step=5)
        self.estimator = unet_through_up_block(models.unet, 2)

    def _alpha(self, t: int) -> torch.Tensor:
        return self.alphas[t] if t >= 0 else torch.tensor(self.ddim.final_alpha)

    def _unet(self, x: torch.Tensor, t: int, context: torch.Tensor) -> torch.Tensor:
        m = self.models
        return m.unet(x.to(m.dtype), t, encoder_hidden_states=context).sample

    def _features(self, x: torch.Tensor, t: int, text: torch.Tensor) -> list[torch.Tensor]:
        """The estimator's up_blocks.1 and .2 outputs, nearest-upsampled to twice the latent size."""
        with BlockTap(self.estimator, "up_blocks.1") as one, BlockTap(self.estimator, "up_blocks.2") as two:
            self.estimator(x.to(self.models.dtype), t, encoder_hidden_states=text)
            return upsampled([one.output, two.output])

    def _guidance(self, latent: torch.Tensor, reference: torch.Tensor, t: int, task: dict[str, Any]) -> torch.Tensor:
        cfg = self.config
        with torch.no_grad():
            ref = self._features(reference, t, task["text"])
        x = latent.detach().requires_grad_(True)
        losses = drag_energy(self._features(x, t, task["text"]), ref, task["boxes"],
                             DragWeights(cfg.w_edit, cfg.w_content, cfg.w_inpaint))
        return guidance_from_energy(x, losses, task["mask"], cfg.energy_scale * 1e3)

    @torch.no_grad()
    def _invert(self, z0: torch.Tensor, text: torch.Tensor) -> list[torch.Tensor]:
        """DDIM inversion, prompt only, recording the bank under each timestep's denoising index."""
        latents, x = [z0], z0
        self.control.set_mode("record")
        for k, t in enumerate(reversed(self.ddim.timesteps)):
            self.control.step = len(self.ddim.timesteps) - 1 - k
            eps = self._unet(x, t, text).to(x.dtype)
            a, a_next = self._alpha(min(t - self.ddim.stride, 999)), self._alpha(t)
            x = a_next ** 0.5 * ((x - (1 - a) ** 0.5 * eps) / a ** 0.5) + (1 - a_next) ** 0.5 * eps
            latents.append(x)
        return latents

    def _step(self, i: int, t: int, latent: torch.Tensor, task: dict[str, Any]) -> torch.Tensor:
        """One `edit` step (with its time-travel repeats); returns x_{t−Δ}."""
        cfg, c = self.config, self.control
        plus, t_prev = cfg.alg == "D+", t - self.ddim.stride
        repeat = 3 if plus and cfg.energy_scale and 20 < i < 30 and i % 2 == 0 else 1
        a, a_prev = self._alpha(t), self._alpha(t_prev)
        for r in range(repeat):
            c.step, c.ip_scale = i, (cfg.ip_scale if 10 <= i < 20 else 0.0)
            c.set_mode("concat")
            with torch.no_grad():
                uncond, cond = self._unet(torch.cat([latent] * 2), t, task["context"]).to(latent.dtype).chunk(2)
            c.set_mode("off")
            c.ip_scale = 0.0
            eps = eps_dir = uncond + cfg.guidance_scale * (cond - uncond)
            if cfg.energy_scale and i < 30 and (not plus or i % 2 == 0 or i < 10):
                eps = eps + self._guidance(latent, task["trajectory"][-(i + 1)], t, task).to(eps.dtype)
            x0 = (latent - (1 - a) ** 0.5 * eps) / a ** 0.5
            x_prev = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps_dir
            if plus and 10 < i < 20 and cfg.sde_strength > 0:
                std = cfg.sde_strength * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
                x_rd = a_prev ** 0.5 * x0 + (1 - a_prev - std ** 2) ** 0.5 * eps_dir
                noise = torch.randn(x_prev.shape, generator=task["generator"], device=x_prev.device).to(x_prev.dtype)
                x_prev = x_prev * (1 - task["latent_mask"]) + (x_rd + std * noise) * task["latent_mask"]
            if repeat > 1:  # renoise x_{t−Δ} → x_t by one inverse DDIM step: prompt only, no image prompt or bank
                with torch.no_grad():
                    e = self._unet(x_prev, max(min(t_prev, 999), 0), task["text"]).to(latent.dtype)
                a_n = self._alpha(max(min(t_prev, 999), 0))
                latent = a ** 0.5 * ((x_prev - (1 - a_n) ** 0.5 * e) / a_n ** 0.5) + (1 - a) ** 0.5 * e
        return x_prev

    def _task(self, sample: DragSample, seed: int) -> tuple[dict[str, Any], np.ndarray]:
        cfg, m = self.config, self.models
        image, sx, sy = resize_to_area(sample.image, cfg.resolution)
        sy = sx if cfg.point_scale == "width" else sy
        prompt = sample.prompt if cfg.use_sample_prompt else ""
        text, empty = m.encode_prompt(prompt), m.encode_prompt("")
        import cv2

        # the UI's 0/1 uint8 mask, bilinearly resized as uint8 (`cv2.resize` default), then > 0.5
        resized = cv2.resize(np.asarray(sample.mask, np.uint8), (image.shape[1], image.shape[0]))
        mask = torch.from_numpy(resized > 0.5).float().to(m.device)
        task = {"text": text, "mask": mask, "prompt": prompt, "generator": torch.Generator(m.device).manual_seed(seed),
                "boxes": drag_boxes(mask, [(x * sx, y * sy) for x, y in sample.handles],
                                    [(x * sx, y * sy) for x, y in sample.targets], 4.0, cfg.clip_x_by)}
        if self.adapter is not None:
            from PIL import Image

            from harness.diffusion.image_prompt_bank import image_tokens

            tokens = image_tokens(self.adapter, np.asarray(Image.fromarray(image).resize((256, 256))))
            self.control.ip_tokens = tokens
        task["context"] = torch.cat([empty, text])
        return task, image

    def edit(self, sample: DragSample, seed: int) -> EditResult:
        m, timings = self.models, {}
        watch = Stopwatch(m.device, timings)
        with watch("prepare"):
            task, image = self._task(sample, seed)
            z0 = encode(m.vae, image, None, torch.float32, mode="mean")
        with controlled_attention(m.unet, self.control):
            try:
                with watch("inversion"):
                    task["trajectory"] = self._invert(z0, task["text"])
                latent = copy_latent_patches(task["trajectory"][-1], task["boxes"], 2, self.config.latent_patch_border)
                task["latent_mask"] = (torch.nn.functional.interpolate(task["mask"][None, None], latent.shape[-2:]) > 0).float()
                with watch("edit"):
                    for i, t in enumerate(self.ddim.timesteps):
                        latent = self._step(i, t, latent, task)
            finally:
                self.control.store.clear()
                self.control.ip_tokens = None
        with watch("decode"):
            info: dict[str, Any] = {}
            out = torch.nn.functional.interpolate(decode(m.vae, latent, info), sample.image.shape[:2], mode="bilinear")
            result = to_uint8(out, "round")
        info.update(alg=self.config.alg, working_size=list(image.shape[:2]), prompt_used=task["prompt"],
                    image_prompt=self.config.ip_adapter)
        return EditResult(image=np.ascontiguousarray(result), timings=timings, info=info)


@dataclass
class DragonDiffusionConfig(DiffEditorConfig):
    METHOD: ClassVar[str] = "dragondiffusion"

    alg: str = "D"


@METHODS.register("dragondiffusion")
class DragonDiffusion(DiffEditor):
    name = "dragondiffusion"
    Config = DragonDiffusionConfig

