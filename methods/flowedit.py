"""FlowEdit (Kulikov et al. 2024, fallenshock/FlowEdit `FlowEdit_utils.py` `FlowEditFLUX`): inversion-free
editing; an ODE directly from the source to the target image driven by the difference of target- and
source-prompt velocities at noised copies of the source, averaged over `n_avg` noise draws.

Released defaults (`FLUX_exp.yaml`): FLUX.1-dev (loaded in float16 by `run_script.py`; model=flux_dev runs
bf16), 28 steps, source guidance 1.5, target guidance 5.5, n_max 24 (the first 4 of 28 steps skipped), n_min 0
(no final plain-sampling phase), n_avg 1. The schedule is diffusers' `FlowMatchEulerDiscreteScheduler` with
sigmas linspace(1, 1/T, T) shifted by μ, as released. Noise: the release seeds torch once per experiment
(seed 10) and draws with `randn_like` image after image; here every edit draws from a generator seeded with
the sample's seed (PIE-Bench: 1234), so a result does not depend on which images ran before. Saved with
diffusers' image processor (rounded).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.flow import latents as L
from harness.flow.editor import FlowEditor
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample


@dataclass
class FlowEditConfig:
    steps: int = 28  # T_steps
    n_avg: int = 1
    source_guidance: float = 1.5
    guidance: float = 5.5  # tar_guidance_scale
    n_min: int = 0
    n_max: int = 24

    def __post_init__(self) -> None:
        if not 0 <= self.n_min <= self.n_max <= self.steps or self.n_avg < 1:
            raise ValueError("flowedit: fields must satisfy 0 ≤ n_min ≤ n_max ≤ steps and n_avg ≥ 1, got "
                             f"n_min={self.n_min}, n_max={self.n_max}, steps={self.steps}, n_avg={self.n_avg}")


@METHODS.register("flowedit")
class FlowEdit(FlowEditor):
    name = "flowedit"
    Config = FlowEditConfig
    rounding = "round"

    def sigmas(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """The scheduler's sigmas (T + 1 values, the last 0) for FlowEdit's `retrieve_timesteps` call."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)
        cfg = scheduler.config
        mu = calculate_shift(seq_len, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / self.config.steps, self.config.steps), mu=mu, device=device)
        return scheduler.sigmas

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        c = self.config
        packed = self.encode(sample)
        x_src = packed.latents
        source, target = self.text(sample.encode_source_prompt), self.text(sample.encode_target_prompt)
        sigmas = self.sigmas(x_src.shape[1], x_src.device)
        gen = torch.Generator(x_src.device).manual_seed(seed)
        start = time.perf_counter()
        z_edit, x_tar = x_src.clone(), None
        for i in range(c.steps):
            if c.steps - i > c.n_max:
                continue
            t_i, t_im1 = sigmas[i], sigmas[i + 1]
            t = t_i * 1000  # the scheduler's timestep; the transformer gets t / 1000
            if c.steps - i > c.n_min:
                delta = torch.zeros_like(x_src)
                for _ in range(c.n_avg):
                    noise = torch.randn(x_src.shape, generator=gen, device=x_src.device, dtype=x_src.dtype)
                    z_src = (1 - t_i) * x_src + t_i * noise
                    z_tar = z_edit + z_src - x_src
                    v_src = L.velocity(self.pipe.transformer, z_src, t / 1000, source, packed.ids, c.source_guidance)
                    v_tar = L.velocity(self.pipe.transformer, z_tar, t / 1000, target, packed.ids, c.guidance)
                    delta += (1 / c.n_avg) * (v_tar - v_src)
                z_edit = (z_edit.to(torch.float32) + (t_im1 - t_i) * delta).to(delta.dtype)
            else:  # the last n_min steps: plain sampling from an SDEdit-style start
                if i == c.steps - c.n_min:
                    noise = torch.randn(x_src.shape, generator=gen, device=x_src.device, dtype=x_src.dtype)
                    x_tar = z_edit + (t_i * noise + (1.0 - t_i) * x_src) - x_src
                v = L.velocity(self.pipe.transformer, x_tar, t / 1000, target, packed.ids, c.guidance)
                x_tar = (x_tar.to(torch.float32) + (t_im1 - t_i) * v).to(v.dtype)
        out = z_edit if c.n_min == 0 else x_tar
        timings = {"editing": time.perf_counter() - start}
        info = {"seed": seed, "sigmas": [round(float(s), 6) for s in sigmas]}
        return EditResult(self.decode(out, packed), timings=timings, info=info)
