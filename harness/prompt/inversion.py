"""Inversions for prompt editing, as components any two-branch editor can use (protocols.md §4.3–§4.4).

All five start from plain DDIM inversion of the VAE latent conditioned on the source prompt with guidance 1
(`ddim_invert`) and differ in what they hand to the guided sampler:

| kind | unconditional embedding per step | source branch |
|---|---|---|
| `ddim` | "" | guided reconstruction |
| `negative_prompt` (Miyake et al.) | the source prompt's embedding | guided reconstruction |
| `null_text` (Mokady et al.) | optimised per step so that the guided step lands on z*_{t−1} | guided reconstruction |
| `direct` (Ju et al., "PnP Inversion") | "" | held on z*_t: after each step it gets the offset z*_{t−1} − (its guided step) |
| `style_diffusion` (Li et al.) | "" | guided reconstruction whose cross-attention values come from a per-step mapping of the image's CLIP tokens, optimised so that the step lands on z*_{t−1} (`style_diffusion.py`) |

Null-text optimisation (PnPInversion `NullInversion`, as released): at step i, Adam on the unconditional
embedding (initialised from step i−1's result) with lr = `lr`·(1 − i/100) for at most `inner_steps`
iterations, MSE between the guided DDIM step from the current latent and z*_{t−1}; stop early when the
loss (before the update) is below `early_stop` + i·2e−5; then take the guided step with the optimised
embedding. The embedding is optimised in float32 whatever the model dtype (Adam's ε underflows in fp16).

Direct Inversion: the reference precomputes the offsets in a separate pass (`direct_offsets`: one guided
step from z*_t per step) and adds them to the source branch, which therefore sits on z*_t at every step,
computes the same guided step there and lands on z*_{t−1}. The sampler does this in the editing pass
itself: it takes the offset from the source branch's own step and sets the branch to z*_{t−1}. The
result is the same (no editor here changes the source branch), without the extra pass and without the
float rounding of "step + (z* − step)", which a chaotic random-weight UNet amplifies from step to step.
`direct_offsets` stays as the reference's formulation: the inversion benchmark times it, and a test checks
that the sampler's offsets equal it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from harness.diffusion.ddim_inversion import DDIMSchedule, ddim_invert
from harness.prompt import style_diffusion
from harness.prompt.style_diffusion import ValueModulation

# eps(x, t, context) → predicted noise; context is (batch, 77, C) text embeddings
CondEpsFn = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]

INVERSIONS = ("ddim", "null_text", "negative_prompt", "direct", "style_diffusion")


@dataclass(frozen=True)
class Conditioning:
    """Text embeddings (1, 77, C) of one edit: `source` conditions the inversion and the source branch."""

    source: torch.Tensor
    target: torch.Tensor
    null: torch.Tensor


@dataclass(frozen=True)
class NullTextSettings:
    inner_steps: int = 10
    lr: float = 1e-2
    early_stop: float = 1e-5


@dataclass
class Inverted:
    """What an inversion hands to the sampler.

    `latents[k]` is z* after k inversion steps (`latents[-1]` starts the denoising); `uncond[i]` is the
    unconditional embedding of denoising step i; `hold_source` (Direct Inversion) keeps the source branch on
    the inversion trajectory; `values` (StyleDiffusion) gives the text-conditioned rows' cross-attention
    values per step.
    """

    kind: str
    latents: list[torch.Tensor]
    uncond: list[torch.Tensor]
    hold_source: bool = False
    values: ValueModulation | None = None
    info: dict[str, Any] = field(default_factory=dict)


def guided_eps(eps_fn: CondEpsFn, x: torch.Tensor, t: int, uncond: torch.Tensor, cond: torch.Tensor,
               guidance: float) -> torch.Tensor:
    """Classifier-free guidance in one UNet call: batch [x; x] with [uncond; cond] (each expanded to x)."""
    n = x.shape[0]
    context = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
    eps_u, eps_c = eps_fn(torch.cat([x, x]), t, context).chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


def invert(kind: str, eps_fn: CondEpsFn, schedule: DDIMSchedule, latent: torch.Tensor, cond: Conditioning,
           guidance: float, inputs: NullTextSettings | style_diffusion.StyleInputs | None = None) -> Inverted:
    """Run inversion `kind` (one of `INVERSIONS`) on a VAE latent. `inputs`: what the kind needs besides —
    `null_text` its `NullTextSettings` (the defaults if None), `style_diffusion` the image tokens
    (`StyleInputs`)."""
    null_text = inputs if isinstance(inputs, NullTextSettings) else NullTextSettings()
    style = inputs if isinstance(inputs, style_diffusion.StyleInputs) else None
    if kind not in INVERSIONS:
        raise ValueError(f"unknown inversion {kind!r}; valid: {', '.join(INVERSIONS)}")
    steps = schedule.steps
    start = time.perf_counter()
    if kind == "style_diffusion":
        if style is None:
            raise ValueError("inversion 'style_diffusion' needs the image tokens (inputs=StyleInputs)")
        latents, values, info = style_diffusion.invert(schedule, latent, cond.source, cond.null, guidance, style)
        info["total_s"] = time.perf_counter() - start
        return Inverted(kind, latents, [cond.null] * steps, values=values, info=info)
    latents = ddim_invert(lambda x, t: eps_fn(x, t, cond.source), latent, schedule)
    info: dict[str, Any] = {"ddim_s": time.perf_counter() - start}
    if kind == "negative_prompt":
        uncond = [cond.source] * steps
    elif kind == "null_text":
        uncond, info["null_text_iterations"], info["null_text_loss"] = optimise_null_text(
            eps_fn, schedule, latents, cond, guidance, null_text)
    else:
        uncond = [cond.null] * steps
    info["total_s"] = time.perf_counter() - start
    return Inverted(kind, latents, uncond, hold_source=kind == "direct", info=info)


@torch.no_grad()
def direct_offsets(eps_fn: CondEpsFn, schedule: DDIMSchedule, latents: list[torch.Tensor], cond: Conditioning,
                   guidance: float) -> list[torch.Tensor]:
    """The reference's separate offset pass: per step, z*_{t−1} minus the guided step taken from z*_t."""
    offsets = []
    n = schedule.steps
    for i, t in enumerate(schedule.timesteps):
        z, z_prev = latents[n - i], latents[n - i - 1]
        offsets.append(z_prev - schedule.step(guided_eps(eps_fn, z, t, cond.null, cond.source, guidance), t, z))
    return offsets


def optimise_null_text(eps_fn: CondEpsFn, schedule: DDIMSchedule, latents: list[torch.Tensor], cond: Conditioning,
                       guidance: float, settings: NullTextSettings
                       ) -> tuple[list[torch.Tensor], list[int], list[list[float]]]:
    """Null-text inversion's per-step unconditional embeddings, the Adam iterations each step used and each
    step's inner losses (before each update). The losses are what the optimisation promises something about
    (they fall within a step for a small enough `lr`); the reconstruction error of the whole trajectory is
    not guaranteed to beat DDIM's with few iterations and random weights."""
    dtype = cond.null.dtype
    embedding = cond.null.detach().float().clone()  # Adam updates in place: never alias the caller's tensor
    x = latents[-1]
    n = schedule.steps
    out, iterations, losses = [], [], []
    for i, t in enumerate(schedule.timesteps):
        target = latents[n - i - 1].float()
        used, step_losses = 0, []
        if settings.inner_steps > 0:
            with torch.no_grad():
                eps_c = eps_fn(x, t, cond.source)
            embedding = embedding.detach().requires_grad_(True)
            optimizer = torch.optim.Adam([embedding], lr=settings.lr * (1.0 - i / 100.0))
            with torch.enable_grad():
                for _ in range(settings.inner_steps):
                    eps_u = eps_fn(x, t, embedding.to(dtype))
                    step = schedule.step(eps_u + guidance * (eps_c - eps_u), t, x)
                    loss = F.mse_loss(step.float(), target)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    used += 1
                    step_losses.append(loss.item())
                    if step_losses[-1] < settings.early_stop + i * 2e-5:
                        break
        embedding = embedding.detach()
        out.append(embedding.clone().to(dtype))  # a snapshot: step i+1 keeps optimising `embedding` in place
        iterations.append(used)
        losses.append(step_losses)
        with torch.no_grad():
            x = schedule.step(guided_eps(eps_fn, x, t, out[-1], cond.source, guidance), t, x)
    return out, iterations, losses
