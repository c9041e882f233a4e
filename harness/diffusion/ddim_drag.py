"""The pipeline DragDiffusion, DragNoise, FreeDrag and GoodDrag share, as one base method class.

1. LoRA on the source image (`harness.diffusion.lora`, cached; its time is reported as `timings["lora"]`).
2. Encode with the VAE mean (`latent_dist.mean · 0.18215`, native resolution, heights floored to ×8).
3. DDIM inversion with the prompt, guidance 1, `round(strength · steps)` steps (Python's round: 0.75 · 50 =
   37.5 → 38). All four build `DDIMScheduler(scaled_linear, 0.00085–0.012, clip_sample=False,
   set_alpha_to_one=False, steps_offset=1)`: 50 steps are t = 981, 961, …, 1, so strength 0.7 starts the
   drag at index 15 (t = 681) and 0.75 at index 12 (t = 741).
4. The method's own drag (`run`), on features of one UNet block resized to `sup_res` of the image
   (points scaled to that grid and rounded), with the editable mask resized nearest to the grid and
   then to the latent.
5. Decode, bilinear resize to the source size, `x · 255` truncated to uint8.

Subclasses implement `run(problem, watch) -> (latent, info)`; `denoise_mutual` is the MasaCtrl denoising
of [reference, edited] that DragDiffusion, FreeDrag and GoodDrag end with.

Configs share `DDIMDragConfig`. A method with named variants lists them in `PRESETS`; fields left `None`
take the preset's value, fields set explicitly win (so `preset=v0.1.0 lora_steps=100` is a v0.1.0 run
with a longer LoRA).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from harness.diffusion.attention_control import MutualSelfAttention, controlled_attention
from harness.diffusion.ddim_inversion import DDIMSchedule, ddim_invert
from harness.diffusion.drag import DragLoop, DragOutcome, from_grid, optimise_drag, to_grid
from harness.diffusion.features import BlockTap, resize_features, supervision_size
from harness.diffusion.graphed_grad import GradGraphs, graphs_enabled, training_graphs
from harness.diffusion.latents import decode, encode, resolve_vae, to_uint8
from harness.diffusion.lora import AUGMENTS, LORA_PROFILES, LoraSpec, lora_for_image, resolve_lora_profile, use_lora
from harness.diffusion.numerics import FiniteWatch
from harness.diffusion.timing import Stopwatch
from harness.method import EditMethod
from harness.models.architectures import SCHEDULER
from harness.types import DragSample, EditResult

FeaturesEps = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class DDIMDragConfig:
    METHOD: ClassVar[str] = "ddim_drag"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    preset: str = ""
    # LoRA stage (lora_steps 0 = no LoRA); lora_profile: auto (fast on the tiny random models) | published | fast
    lora_profile: str = "auto"
    lora_rank: int = 16
    lora_steps: int | None = 80
    lora_lr: float | None = 5e-4
    lora_batch_size: int | None = 4
    lora_augment: str = "per_step"
    lora_resolution: int = 512
    lora_seed: int = 0
    lora_cache: bool = True
    cuda_graphs: bool = True  # GPU: LoRA and drag passes as CUDA graphs (1.3–3×; within eager's own run-to-run spread)
    # inversion
    steps: int = 50
    inversion_strength: float | None = 0.7
    use_sample_prompt: bool = True  # False: the empty prompt (GoodDrag's bench)
    vae: str = "default"
    # drag
    lr: float | None = 0.01
    lam: float | None = 0.1
    feature_block: str = "up_blocks.2"  # DragDiffusion's unet_feature_idx=3
    sup_res: float = 0.5

    def __post_init__(self) -> None:
        name = self.METHOD
        if self.PRESETS or self.preset:
            if self.preset not in self.PRESETS:
                raise ValueError(f"{name}: preset must be one of {sorted(self.PRESETS)}, got {self.preset!r}")
            for key, value in self.PRESETS[self.preset].items():
                if getattr(self, key) is None:
                    setattr(self, key, value)
        missing = [f.name for f in fields(self) if getattr(self, f.name) is None]
        if missing:
            raise ValueError(f"{name}: no value for {missing} (set them or choose a preset that does)")
        if self.lora_augment not in AUGMENTS:
            raise ValueError(f"{name}: lora_augment must be one of {AUGMENTS}, got {self.lora_augment!r}")
        if self.lora_profile not in LORA_PROFILES:
            raise ValueError(f"{name}: lora_profile must be one of {LORA_PROFILES}, got {self.lora_profile!r}")
        if not 0 < self.inversion_strength <= 1:
            raise ValueError(f"{name}: inversion_strength must be in (0, 1], got {self.inversion_strength}")
        if self.inversion_steps < 1:
            raise ValueError(f"{name}: inversion_strength · steps rounds to no inversion step")

    @property
    def inversion_steps(self) -> int:
        return round(self.inversion_strength * self.steps)

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(rank=self.lora_rank, steps=self.lora_steps, lr=self.lora_lr, batch_size=self.lora_batch_size,
                        augment=self.lora_augment, resolution=self.lora_resolution, seed=self.lora_seed)


@dataclass
class DragProblem:
    """One sample, inverted and put on the supervision grid."""

    trajectory: list[torch.Tensor]  # DDIM inversion [z0, …, z_T'] (float32)
    index: int  # index into `DDIMSchedule.timesteps` of the inverted latent
    text: torch.Tensor  # (1, 77, C)
    handles: torch.Tensor  # (N, 2) grid (x, y)
    targets: torch.Tensor
    editable: torch.Tensor  # (1, 1, h, w) latent-sized float, 1 = editable
    grid_hw: tuple[int, int]
    image_hw: tuple[int, int]
    finite: FiniteWatch = field(default_factory=FiniteWatch)  # raised once, before decoding

    @property
    def latent(self) -> torch.Tensor:
        return self.trajectory[-1]


def drag_schedule(steps: int, prediction_type: str = "epsilon") -> DDIMSchedule:
    """The DDIM schedule of the DragDiffusion family (981, 961, …, 1 for 50 steps)."""
    from diffusers import DDIMScheduler

    if prediction_type != "epsilon":  # the releases treat the UNet output as ε and convert nothing
        raise ValueError(f"the DDIM drag pipelines need an ε-prediction model, this one predicts {prediction_type!r}")
    return DDIMSchedule(DDIMScheduler(**SCHEDULER), steps)


def editable_on_latent(mask: np.ndarray, grid_hw: tuple[int, int], latent_hw: tuple[int, int],
                       device: torch.device) -> torch.Tensor:
    """The released resize chain: nearest to the supervision grid, then nearest to the latent."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None].to(device)
    return F.interpolate(F.interpolate(m, grid_hw, mode="nearest"), latent_hw, mode="nearest")


class DDIMDragMethod(EditMethod):
    families = ("drag",)
    Config = DDIMDragConfig
    # where the LoRA came from changes no output; graphs change outputs only as much as two eager GPU runs
    # differ from each other (harness/diffusion/graphed_grad.py, benchmarks/NOTES.md)
    runtime_fields = ("lora_cache", "cuda_graphs")
    key_omits_default = ("lora_profile",)  # `auto` on a full model runs the configured LoRA, as before profiles

    @classmethod
    def for_model(cls, params, model):
        return resolve_lora_profile(cls.name, params, model)

    def setup(self, models) -> None:
        self.models = models
        self.ddim = drag_schedule(self.config.steps, models.scheduler_config.get("prediction_type", "epsilon"))
        self.vae, self.vae_id = resolve_vae(models, self.config.vae)

    # ------------------------------------------------------------------------------------------ helpers
    def eps(self, x: torch.Tensor, t: int, text: torch.Tensor) -> torch.Tensor:
        """UNet ε in float32 for a float32 batch (the UNet runs in the model dtype)."""
        m = self.models
        return m.unet(x.to(m.dtype), t, encoder_hidden_states=text.expand(x.shape[0], -1, -1)).sample.float()

    def denoise_mutual(self, reference: torch.Tensor, edited: torch.Tensor, index: int, text: torch.Tensor,
                       start_step: int, start_layer: int, finite: FiniteWatch) -> torch.Tensor:
        """Denoise [reference, edited] from `timesteps[index]` with MasaCtrl; return the edited branch."""
        latents = torch.cat([reference, edited])
        control = MutualSelfAttention(start_step, start_layer, groups=1)  # guidance 1: one [ref, edited] pair
        with torch.no_grad(), controlled_attention(self.models.unet, control):
            for i, t in enumerate(self.ddim.timesteps[index:]):
                control.step = i  # MasaCtrl counts the steps since its registration
                latents = finite.watch(self.ddim.step(self.eps(latents, t, text), t, latents), "denoising", i, t)
        return latents[1:]

    def features_and_eps(self, tap: BlockTap, problem: DragProblem,
                         inject: Callable[[torch.Tensor], torch.Tensor] | None = None) -> FeaturesEps:
        """`(variable, t) -> (tap's block output on the supervision grid, float32 ε)`: the UNet call every drag
        step makes. While the variable requires a gradient its forward and backward replay from CUDA graphs
        (harness/diffusion/graphed_grad.py; t goes in as a device tensor, so one capture serves every
        timestep). `inject(variable)` returns the UNet input for a variable that is not the latent
        (DragNoise's bottleneck, which it installs in its tap)."""
        def fn(variable: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            eps = self.eps(variable if inject is None else inject(variable), t, problem.text)
            return resize_features(tap.output, problem.grid_hw), eps

        graphed = GradGraphs(fn)
        return lambda variable, t: graphed(variable, torch.tensor(t, device=variable.device))

    def drag_at_start(self, problem: DragProblem, loop: DragLoop,
                      bottleneck: str | None = None) -> tuple[DragOutcome, torch.Tensor | None]:
        """DragDiffusion's optimisation at the inverted timestep: of the latent itself or, with
        `bottleneck` (DragNoise), of that block's output, which then replaces it in the UNet.
        Returns the outcome and the block's original output (None when the latent is optimised)."""
        t, z, unet = self.ddim.timesteps[problem.index], problem.latent, self.models.unet
        with contextlib.ExitStack() as hooks:
            tap = hooks.enter_context(BlockTap(unet, self.config.feature_block))
            swap = hooks.enter_context(BlockTap(unet, bottleneck)) if bottleneck else None

            def inject(h: torch.Tensor) -> torch.Tensor:
                swap.replacement = h
                return z

            features_eps = self.features_and_eps(tap, problem, inject if swap is not None else None)

            def unet_at(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                features, eps = features_eps(x, t)
                return features, self.ddim.step(eps, t, x if swap is None else z)

            with torch.no_grad():
                reference, x_prev_0 = self.eps_features(tap, problem, z, t)
            args = ((reference, x_prev_0), problem.handles, problem.targets, problem.editable, loop)
            if swap is None:
                return optimise_drag(unet_at, z, *args), None
            original = swap.output.detach().float()
            return optimise_drag(unet_at, original, *args), original

    def eps_features(self, tap: BlockTap, problem: DragProblem, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eager `(features on the grid, x_{t−1})` at `x` (the reference pass before a drag)."""
        eps = self.eps(x, t, problem.text)
        return resize_features(tap.output, problem.grid_hw), self.ddim.step(eps, t, x)

    # ---------------------------------------------------------------------------------------- the stages
    def prepare(self, sample: DragSample, prompt: str) -> DragProblem:
        m, cfg = self.models, self.config
        z0 = encode(self.vae, sample.image, None, torch.float32, mode="mean")
        text = m.encode_prompt(prompt)
        finite = FiniteWatch()
        trajectory = ddim_invert(lambda x, t: self.eps(x, t, text), z0, self.ddim, cfg.inversion_steps)
        finite.watch(trajectory[-1], "inversion", len(trajectory) - 1)
        image_hw = sample.image.shape[:2]
        grid_hw = supervision_size(image_hw, cfg.sup_res)
        return DragProblem(
            trajectory=trajectory, index=cfg.steps - cfg.inversion_steps, text=text,
            handles=to_grid(sample.handles, image_hw, grid_hw).to(m.device),
            targets=to_grid(sample.targets, image_hw, grid_hw).to(m.device),
            editable=editable_on_latent(sample.mask, grid_hw, tuple(z0.shape[-2:]), m.device),
            grid_hw=grid_hw, image_hw=image_hw, finite=finite)

    def run(self, problem: DragProblem, watch: Stopwatch) -> tuple[torch.Tensor, dict[str, Any]]:
        """The method's drag and denoising; returns the final latent and provenance for the record."""
        raise NotImplementedError

    def finish(self, latent: torch.Tensor, image_hw: tuple[int, int], info: dict[str, Any]) -> np.ndarray:
        image = F.interpolate(decode(self.vae, latent, info), image_hw, mode="bilinear")
        return to_uint8(image, "truncate")

    def edit(self, sample: DragSample, seed: int) -> EditResult:
        cfg, m = self.config, self.models
        prompt = sample.prompt if cfg.use_sample_prompt else ""
        with training_graphs(cfg.cuda_graphs):
            result = self._edit(sample, prompt)
            # as run: never on the CPU or under deterministic=true
            result.info["cuda_graphs"] = graphs_enabled(m.device)
            return result

    def _edit(self, sample: DragSample, prompt: str) -> EditResult:
        cfg, m = self.config, self.models
        lora = lora_for_image(m, self.vae, self.vae_id, sample.image, prompt, cfg.lora_spec(), cfg.lora_cache)
        timings = {"lora": lora.seconds}
        watch = Stopwatch(m.device, timings)
        with use_lora(m.unet, lora, m.dtype):
            with watch("inversion"):
                problem = self.prepare(sample, prompt)
            latent, info = self.run(problem, watch)
        problem.finite.raise_first()
        with watch("decode"):
            image = self.finish(latent, problem.image_hw, info)
        info = {**lora.info(), "vae": self.vae_id, "prompt_used": prompt,
                "drag_timestep": self.ddim.timesteps[problem.index],
                "inversion_steps": len(problem.trajectory) - 1,
                "supervision_grid": list(problem.grid_hw), "latent_size": list(problem.latent.shape[-2:]),
                **info}
        return EditResult(image=np.ascontiguousarray(image), timings=timings, info=info)

    def points_info(self, problem: DragProblem, handles: torch.Tensor) -> dict[str, Any]:
        """Where the handles ended, on the grid and in pixels (the released UIs report the latter)."""
        return {"final_handles_grid": handles.cpu().tolist(),
                "final_handles_px": from_grid(handles, problem.image_hw, problem.grid_hw).tolist(),
                "targets_grid": problem.targets.cpu().tolist()}
