"""The guided two-branch DDIM sampler shared by Prompt-to-Prompt and MasaCtrl.

Branch 0 reconstructs the source (source or empty prompt), branch 1 is the edit (target prompt). Every
step is one UNet call on [uncond × branches; cond × branches] (rows u_src, u_tgt, c_src, c_tgt), so an
attention controller sees both branches of each guidance half side by side. After the DDIM step the
Direct Inversion's offset is applied to branch 0 (it is set to z*_{t−1}; see `harness.prompt.inversion`),
then the controller's step callback runs (Prompt-to-Prompt's LocalBlend), in that order, as in the
reference. A StyleDiffusion inversion also hands over the cross-attention values of the text-conditioned
rows for each step (`Inverted.values`); the unconditional rows keep their embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.diffusion.attention_control import AttentionController, controlled_attention
from harness.diffusion.ddim_inversion import DDIMSchedule
from harness.prompt.inversion import Inverted


@dataclass
class Sampled:
    latents: torch.Tensor  # (branches, 4, h, w) after the last step
    source_trajectory: list[torch.Tensor]  # branch 0 after each step (for reconstruction checks)
    source_offsets: list[torch.Tensor]  # Direct Inversion: z*_{t−1} − branch 0's guided step, per step


@torch.no_grad()
def sample_branches(unet, schedule: DDIMSchedule, inverted: Inverted, contexts: torch.Tensor, guidance: float,
                    controller: AttentionController) -> Sampled:
    """Denoise every branch from z*_T; `contexts` holds one text embedding per branch (branches, 77, C)."""
    branches = contexts.shape[0]
    x = inverted.latents[-1].expand(branches, -1, -1, -1).clone()
    n = schedule.steps
    trajectory, offsets = [], []
    with controlled_attention(unet, controller):
        for i, t in enumerate(schedule.timesteps):
            controller.step = i
            uncond = inverted.uncond[i].expand(branches, -1, -1)
            kwargs = {}
            if inverted.values is not None:
                kwargs["cross_attention_kwargs"] = {"value_context": torch.cat([uncond, inverted.values.apply(i, contexts)])}
            eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, contexts]), **kwargs).sample.chunk(2)
            x = schedule.step(eps_u + guidance * (eps_c - eps_u), t, x)
            if inverted.hold_source:
                on_trajectory = inverted.latents[n - i - 1]
                offsets.append(on_trajectory[0] - x[0])
                x = torch.cat([on_trajectory, x[1:]])
            x = controller.step_callback(x)
            trajectory.append(x[0])
    return Sampled(x, trajectory, offsets)
