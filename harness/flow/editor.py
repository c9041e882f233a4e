"""What the FLUX PIE-Bench editors share: the model check, latents in and out, prompts, the velocity call
with an attention controller, and the provenance of an edit.

PIE-Bench prompts are used with their `[ ]` markers stripped (protocols.md §4.1), which answers the question
FireFlow #10 and UniEdit-Flow #7 ask. The releases draw no random numbers in inversion-based editing (the VAE
mean, a deterministic ODE), so the per-image seed changes nothing there; FlowEdit's noise and Kontext's
initial latents come from it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from harness.flow import latents as L
from harness.flow.attention import FlowController, controlled
from harness.flow.schedule import flux_timesteps
from harness.flow.solvers import StepContext, Walk, integrate
from harness.method import EditMethod
from harness.types import PromptEditSample


class FlowEditor(EditMethod):
    families = ("prompt",)
    pipelines: ClassVar[tuple[str, ...]] = ("flux",)
    rounding: ClassVar[str] = "truncate"  # the black-forest-labs scripts' `.byte()`; FlowEdit: round

    def setup(self, models) -> None:
        pipeline = getattr(getattr(models, "spec", None), "pipeline", None)
        if pipeline not in self.pipelines:
            raise ValueError(f"method {self.name!r} runs on FLUX models (pipeline {' or '.join(self.pipelines)}), "
                             f"but the model config {models.spec.name!r} has pipeline {pipeline!r}; "
                             f"use model=flux_dev (real weights), random_flux_dev or tiny_flux")
        self.models = models
        self.pipe = models.pipe

    def encode(self, sample: PromptEditSample) -> L.Packed:
        L.check_size(sample.image, sample.sample_id)
        return L.encode_image(self.pipe, sample.image)

    def text(self, prompt: str) -> L.FlowText:
        return L.encode_text(self.pipe, prompt)

    def decode(self, packed: torch.Tensor, like: L.Packed) -> np.ndarray:
        return np.ascontiguousarray(L.decode(self.pipe, packed, like, self.rounding))

    def schedule(self, steps: int, packed: L.Packed) -> list[float]:
        return flux_timesteps(steps, packed.latents.shape[1])

    def velocity(self, text: L.FlowText, img_ids: torch.Tensor, guidance: float,
                 controller: FlowController | None = None) -> Callable[[torch.Tensor, float, StepContext], torch.Tensor]:
        transformer = self.pipe.transformer

        def call(x: torch.Tensor, t: float, ctx: StepContext) -> torch.Tensor:
            if controller is not None:
                controller.context = ctx
            return L.velocity(transformer, x, t, text, img_ids, guidance)
        return call

    @torch.no_grad()
    def invert_and_sample(self, packed: L.Packed, prompts: tuple[L.FlowText, L.FlowText], walks: tuple[Walk, Walk],
                          controller: FlowController) -> tuple[torch.Tensor, dict[str, float]]:
        """Invert with the source prompt (guidance `self.config.inversion_guidance`), sample with the target
        prompt (`self.config.guidance`) under `controller`; timings per phase."""
        c = self.config
        with controlled(self.pipe.transformer, controller):
            start = time.perf_counter()
            z = integrate(self.velocity(prompts[0], packed.ids, c.inversion_guidance, controller), packed.latents, walks[0])
            middle = time.perf_counter()
            x = integrate(self.velocity(prompts[1], packed.ids, c.guidance, controller), z, walks[1])
        return x, {"inversion": middle - start, "editing": time.perf_counter() - middle}

    def base_info(self, seed: int, timesteps: list[float]) -> dict[str, Any]:
        return {"seed": seed, "timesteps": [round(t, 6) for t in timesteps]}
