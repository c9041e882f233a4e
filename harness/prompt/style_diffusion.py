"""StyleDiffusion inversion (Li et al. 2023, "StyleDiffusion: Prompt-Embedding Inversion for Text-Based
Editing"), as PnPInversion @07f97f4 runs it (`run_editing_stylediffusion.py`, `models/stylediffusion/`).

What is optimised: a small mapping network per denoising step that turns the source image's CLIP ViT-B/16
tokens (197 × 768, `image_tokens.py`) into an element-wise affine map of the source prompt embedding,
`values = prompt · scale + shift` (scale, shift: 77 × 768 each). The result replaces the input of the
**value** projection (`to_v`) of every cross-attention layer in the text-conditioned UNet call; queries and
keys still see the prompt. The unconditional call ("") is never changed.

Network (`Trainer` in `utils.py`, BLOCK_NUM 1): Conv1d(197 → 154, k 1) → [Conv1d(154 → 154, k 1) →
BatchNorm1d(154) → LeakyReLU(0.01)] → Conv1d(154 → 154, k 1) over the token axis; channels 0–76 are `scale`,
77–153 `shift`. The modules stay in training mode throughout (never `.eval()`), so BatchNorm always
normalises with the statistics of the single input; `track_running_stats=False` computes exactly that.

Optimisation (`VaeInversion`, `inversion.py`):
1. DDIM inversion with the source prompt (guidance 1), recording the cross-attention probabilities of the
   layers at 1/4 of the latent side (the reference's 16×16 layers at 512²: transformer blocks 4, 5, 7, 8, 9);
   the maps of inversion step k are the target of denoising step min(steps − k, steps − 1) — the latent that
   step starts from (the reference stores them as A*(k) and repeats the last one, "A*(T) = A*(T−1)").
2. From z*_T, for each denoising step i: ⌈inner_steps · e^(−0.1·i)⌉ Adam iterations (lr = lr·(1 − i/100),
   a fresh optimiser per step; the network starts from step i−1's weights) on
   MSE(guided DDIM step, z*_{t−1}) + Σ_layers MSE(cross-attention maps, inversion maps), guidance 7.5 with the
   unconditional noise computed once per step; stop when the loss (before the update) is below
   `early_stop` + i·2e−5. Then the guided step with the optimised network moves the latent on, as in
   null-text inversion. The mapping network and Adam run in float32 whatever the UNet dtype.
3. Editing (`ValueModulation`): in the text-conditioned rows, the source branch uses step i's map at every
   step; the edit branch applies the same map to the **target** prompt's embedding for the first
   `value_replace` (τ_v = 0.5) of the steps and its plain embedding afterwards.

As released vs paper:
- The paper maps the image to the value embedding itself; the released `forward_embed` produces an affine
  modulation of the prompt embedding (the direct version is commented out). The released one is implemented.
- The script's keyword arguments `cross_replace_steps=0.4` and `blend_word`/`eq_params` are not what runs:
  it calls P2P with τ_c = 0.6 (cross-attention), τ_s = 0.6 (self-attention), τ_u = 0 (no unconditional
  self-attention replacement), τ_v = 0.5, no LocalBlend and no equalizer, and picks the replace controller
  when the two prompts have the same number of characters (`controller=by_length` in `methods/p2p.py`).
- The network's random initialisation: the reference draws it from the global RNG after `clip.load` built
  its model (which consumes draws), so it cannot be reproduced bit for bit; here it is PyTorch's default
  initialisation drawn from a generator seeded with the sample seed.
- The reference encodes the image with CLIP inside every cross-attention call; the encoder is frozen and
  deterministic, so the tokens are computed once.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.determinism import seeded_global_rng
from harness.diffusion.attention_control import CrossAttentionRecorder, controlled_attention
from harness.diffusion.ddim_inversion import DDIMSchedule, ddim_invert

TEXT_TOKENS = 77
LOSS_BLOCKS = frozenset({4, 5, 7, 8, 9})  # cross-attention at 1/4 of the latent side (16×16 at 512²)


@dataclass(frozen=True)
class StyleSettings:
    inner_steps: int = 100  # num_inner_steps: Adam iterations at step 0, ⌈inner_steps·e^(−0.1·i)⌉ at step i
    lr: float = 1e-2
    early_stop: float = 1e-5
    value_replace: float = 0.5  # τ_v: share of the steps in which the edit branch uses the mapped values
    seed: int = 1234  # the mapping network's initialisation


@dataclass
class StyleInputs:
    """What the inversion needs besides the latent: the UNet (for attention control), the image tokens."""

    unet: Any
    tokens: torch.Tensor  # (1, image tokens, width) float32
    settings: StyleSettings
    encoder: str  # identity of the image encoder, for the record


class MappingNetwork(nn.Module):
    """Image tokens (1, N, C) → (scale, shift), each (1, 77, C)."""

    def __init__(self, image_tokens: int) -> None:
        super().__init__()
        width = 2 * TEXT_TOKENS
        self.start = nn.Conv1d(image_tokens, width, kernel_size=1)
        self.block = nn.Sequential(nn.Conv1d(width, width, kernel_size=1),
                                   nn.BatchNorm1d(width, track_running_stats=False), nn.LeakyReLU())
        self.end = nn.Conv1d(width, width, kernel_size=1)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.end(self.block(self.start(tokens)))
        return out[:, :TEXT_TOKENS], out[:, TEXT_TOKENS:]


@dataclass
class ValueModulation:
    """Per denoising step, the (scale, shift) that turn a prompt embedding into the cross-attention values of
    the text-conditioned rows; the edit branches use it only in steps < `target_steps`."""

    affine: list[tuple[torch.Tensor, torch.Tensor]]
    target_steps: int

    def apply(self, step: int, contexts: torch.Tensor) -> torch.Tensor:
        """Value inputs for `contexts` (branches, 77, C), branch 0 = source."""
        scale, shift = self.affine[step]
        mapped = (contexts.float() * scale + shift).to(contexts.dtype)
        if step < self.target_steps:
            return mapped
        return torch.cat([mapped[:1], contexts[1:]])


def inner_iterations(inner_steps: int, step: int) -> int:
    return int(math.ceil(inner_steps * math.exp(-0.1 * step)))


def invert(schedule: DDIMSchedule, latent: torch.Tensor, source: torch.Tensor, null: torch.Tensor, guidance: float,
           style: StyleInputs) -> tuple[list[torch.Tensor], ValueModulation, dict[str, Any]]:
    """DDIM inversion + the per-step mapping networks: (z*_0 … z*_T, the value modulation, info)."""
    unet, settings, n = style.unet, style.settings, schedule.steps
    recorder = CrossAttentionRecorder(LOSS_BLOCKS)
    inversion_maps: list[list[torch.Tensor]] = []

    def eps_recording(x: torch.Tensor, t: int) -> torch.Tensor:
        recorder.maps = []
        out = unet(x, t, encoder_hidden_states=source).sample
        inversion_maps.append([m.float() for m in recorder.maps])
        return out

    start = time.perf_counter()
    with controlled_attention(unet, recorder):
        latents = ddim_invert(eps_recording, latent, schedule)
        info: dict[str, Any] = {"ddim_s": time.perf_counter() - start, "style_diffusion_encoder": style.encoder}
        with seeded_global_rng(settings.seed):
            mapping = MappingNetwork(style.tokens.shape[1])
        mapping = mapping.to(style.tokens.device)
        affine, iterations, losses = optimise(style, schedule, latents, (source, null), guidance, mapping,
                                              ([inversion_maps[min(n - i, n - 1)] for i in range(n)], recorder))
    info.update(style_diffusion_iterations=iterations, style_diffusion_loss=losses)
    return latents, ValueModulation(affine, math.ceil(settings.value_replace * n)), info


def optimise(style: StyleInputs, schedule: DDIMSchedule, latents: list[torch.Tensor], prompts: tuple[torch.Tensor, torch.Tensor],
             guidance: float, mapping: MappingNetwork,
             maps: tuple[list[list[torch.Tensor]], CrossAttentionRecorder]
             ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[int], list[list[float]]]:
    """Step 2 of the module docstring, inside `controlled_attention(style.unet, recorder)`: `prompts` are the
    (source, null) embeddings, `maps` the inversion's cross-attention maps per step and the recorder that
    collects the current ones. Returns per step the optimised (scale, shift), the Adam iterations used and
    the [first, last] loss (empty without iterations)."""
    unet, tokens, settings = style.unet, style.tokens, style.settings
    (source, null), (target_maps, recorder) = prompts, maps
    n = schedule.steps
    x = latents[-1]
    affine, iterations, losses = [], [], []

    def guided_step(eps_u: torch.Tensor, t: int, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        values = (source.float() * scale + shift).to(source.dtype)
        eps_c = unet(x, t, encoder_hidden_states=source, cross_attention_kwargs={"value_context": values}).sample
        return schedule.step(eps_u + guidance * (eps_c - eps_u), t, x)

    for i, t in enumerate(schedule.timesteps):
        with torch.no_grad():
            eps_u = unet(x, t, encoder_hidden_states=null).sample
        target = latents[n - i - 1].float()
        optimizer = torch.optim.Adam(mapping.parameters(), lr=settings.lr * (1.0 - i / 100.0))
        step_losses = []
        with torch.enable_grad():
            for _ in range(inner_iterations(settings.inner_steps, i)):
                recorder.maps = []
                loss = F.mse_loss(guided_step(eps_u, t, x, *mapping(tokens)).float(), target)
                for reference, current in zip(target_maps[i], recorder.maps, strict=True):
                    loss = loss + F.mse_loss(current.float(), reference)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step_losses.append(loss.item())
                if step_losses[-1] < settings.early_stop + i * 2e-5:
                    break
        with torch.no_grad():
            scale, shift = mapping(tokens)
            affine.append((scale, shift))
            x = guided_step(eps_u, t, x, scale, shift)
        iterations.append(len(step_losses))
        losses.append([step_losses[0], step_losses[-1]] if step_losses else [])
    return affine, iterations, losses
