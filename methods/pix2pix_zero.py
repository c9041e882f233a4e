"""Pix2Pix-Zero (Parmar et al. 2023) as PnPInversion @07f97f4 runs it on PIE-Bench
(`run_editing_pix2pix_zero.py` with `models/pix2pix_zero/{ddim_inv,edit_pipeline,scheduler}.py`).

SD 1.4 (`model=sd14`), float32, 50 steps, guidance 7.5, cross-attention guidance 0.1. Per image:

1. **Base prompt** = a BLIP caption of the source image (`prompt=caption`, `harness/prompt/captioner.py`),
   not the dataset's source prompt; `prompt=source` uses the source prompt instead.
2. **Latent**: a *sample* of the VAE posterior (`latent_dist.sample()`, drawn here from a generator seeded
   with the sample seed — the reference draws it from the global RNG right after `setup_seed(1234)`).
3. **Inversion** (`DDIMInversion`, guidance 1, base prompt): before each step the noise prediction is
   regularised — 5 rounds of [5 auto-correlation gradient steps (weight 20, gradient / 5) then one KL step
   (weight 20)]; the auto-correlation loss sums, per channel and per level of a 2×2 average-pool pyramid down
   to 8×8, the squared means of the noise times itself rolled by a random offset (Python `random.randrange`
   of half the side, seeded here with the sample seed as `setup_seed` does) along each spatial axis; the KL
   term is var + mean² − 1 − log(var + 1e−7) with the unbiased variance. The inverse step is the released
   `DDIMInverseScheduler.step(reverse=True)`: at timestep t (1, 21, …, 981) it moves from ᾱ[t − 1] to
   ᾱ[t + 19] (ᾱ[999] for the last step), i.e. from level 0 up to 999 — one stride off the denoising
   schedule (981, 961, …, 1), as released.
4. **Edit direction** = E(target prompt) − E(source prompt), the two 77-token CLIP embeddings subtracted
   token by token. The reference's `mean(0)` averages over the sentences of a batch of one (pix2pix-zero
   averages many sentences per class), not over tokens. It is added to the conditional embedding only.
5. **Reference pass and edit** (lockstep here; the reference runs the whole reference pass first, which
   gives the same numbers without keeping 50 steps of maps):
   - reference: from x_T, guidance 7.5 with negative prompt = conditional prompt = the base prompt; the
     cross-attention probabilities of all 16 layers (both rows) are recorded at every step;
   - edit: from x_T, per step one UNet call on [x, x] with [base, base + direction] under autograd;
     loss = Σ_layers mean over rows × heads of Σ_{queries, tokens} (map − reference map)²; one SGD step of
     size `cross_attention_guidance` on the two-row latent; the noise is then predicted again at the
     updated rows and the DDIM step starts from the updated *first* row (the unconditional one), as released.
   - `inversion=direct` (Direct Inversion): after each step the reference branch gets the offset back onto
     the inversion trajectory (z*_{t−1} − its step) and the **edit branch gets the same offset** — the
     released script adds `noise_loss_list[i]` to the edited latent.
6. **Output**: diffusers' `numpy_to_pil`, x·255 rounded (the P2P-style scripts truncate).

Not reproduced bit for bit: LAVIS's BLIP weights and beam search may caption slightly differently from the
transformers model (see `captioner.py`); the reference's posterior draw and roll offsets come from the global
RNGs after `setup_seed(1234)`, which the seeded generators here match only if nothing else drew from them
first (nothing does in the released script).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.diffusion.attention_control import CrossAttentionRecorder, controlled_attention
from harness.diffusion.ddim_inversion import DDIMSchedule
from harness.diffusion.latents import decode as decode_unit_float
from harness.prompt import captioner
from harness.prompt.editor import EditorFields, PromptEditor, timed
from harness.registry import METHODS
from harness.types import EditResult, PromptEditSample


@dataclass
class Pix2PixZeroConfig(EditorFields):
    cross_attention_guidance: float = 0.1  # XA_GUIDANCE: SGD step size on the latent, every step
    prompt: str = "caption"  # caption (BLIP, as released) | source (the sample's source prompt)
    captioner: str = "Salesforce/blip-image-captioning-base"  # hub id | local dir | random | random_tiny
    lambda_ac: float = 20.0  # inversion: auto-correlation regulariser weight
    lambda_kl: float = 20.0  # inversion: KL regulariser weight
    regularisation_steps: int = 5
    autocorrelation_rolls: int = 5

    def __post_init__(self) -> None:
        if self.prompt not in ("caption", "source"):
            raise ValueError(f"pix2pix_zero: field 'prompt' must be caption or source, got {self.prompt!r}")


@dataclass(frozen=True)
class NoiseRegularisation:
    lambda_ac: float = 20.0
    lambda_kl: float = 20.0
    steps: int = 5
    rolls: int = 5


def autocorrelation_loss(noise: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Pix2Pix-Zero's auto-correlation penalty of a (1, C, H, W) noise map; draws one offset per channel and
    pyramid level from `rng`, in the reference's order."""
    if noise.shape[0] != 1:
        raise ValueError(f"autocorrelation_loss takes one noise map, got a batch of {noise.shape[0]}")
    loss = noise.new_zeros(())
    for channel in noise[0]:
        level = channel[None, None]
        while True:
            shift = rng.randrange(level.shape[2] // 2)
            loss = loss + (level * torch.roll(level, shifts=shift, dims=2)).mean() ** 2
            loss = loss + (level * torch.roll(level, shifts=shift, dims=3)).mean() ** 2
            if level.shape[2] <= 8:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return loss


def kl_loss(noise: torch.Tensor) -> torch.Tensor:
    var = noise.var()
    return var + noise.mean() ** 2 - 1 - torch.log(var + 1e-7)


def regularise(eps: torch.Tensor, rng: random.Random, reg: NoiseRegularisation) -> torch.Tensor:
    """The inversion's noise prediction after the released regularisation loop (float32)."""
    e = eps.detach().float()
    with torch.enable_grad():
        for _ in range(reg.steps):
            if reg.lambda_ac > 0:
                for _ in range(reg.rolls):
                    v = e.detach().clone().requires_grad_(True)
                    grad, = torch.autograd.grad(autocorrelation_loss(v, rng), v)
                    e = e - reg.lambda_ac * grad / reg.rolls
            if reg.lambda_kl > 0:
                v = e.detach().clone().requires_grad_(True)
                grad, = torch.autograd.grad(kl_loss(v), v)
                e = e - reg.lambda_kl * grad
            e = e.detach()
    return e.to(eps.dtype)


def inverse_step(schedule: DDIMSchedule, eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
    """The released `DDIMInverseScheduler.step(reverse=True)`: ᾱ[t − 1] → ᾱ[t + stride − 1] (or ᾱ[−1])."""
    table = schedule.alphas_cumprod
    a = float(table[t - 1])
    upper = t + schedule.stride
    a_next = float(table[upper - 1]) if upper <= len(table) else float(table[-1])
    x0 = (x - (1 - a) ** 0.5 * eps) / a ** 0.5
    return a_next ** 0.5 * x0 + (1 - a_next) ** 0.5 * eps


@torch.no_grad()
def invert(eps_fn, schedule: DDIMSchedule, latent: torch.Tensor, rng: random.Random,
           reg: NoiseRegularisation) -> list[torch.Tensor]:
    """z*_0 … z*_T with the regularised noise (`eps_fn(x, t)`: the base prompt, guidance 1)."""
    latents = [latent]
    x = latent
    for t in reversed(schedule.timesteps):
        x = inverse_step(schedule, regularise(eps_fn(x, t), rng, reg), t, x)
        latents.append(x)
    return latents


def edit_direction(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1, 77, C) float32: the target prompt's embedding minus the source prompt's, token by token."""
    return target.float() - source.float()


def guided(eps: torch.Tensor, guidance: float) -> torch.Tensor:
    eps_u, eps_c = eps.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


@dataclass
class Edited:
    latent: torch.Tensor  # (1, 4, h, w) after the last step
    reference_trajectory: list[torch.Tensor]  # the reference branch after each step
    offsets: list[torch.Tensor]  # Direct Inversion: z*_{t−1} − the reference branch's step, per step


def cross_attention_guided_edit(unet, schedule: DDIMSchedule, latents: list[torch.Tensor],
                                reference_context: torch.Tensor, edit_context: torch.Tensor, guidance: float,
                                weight: float, hold_reference: bool) -> Edited:
    """Step 5 of the module docstring. Contexts are (2, 77, C): [negative, conditional]."""
    n = schedule.steps
    reference = x = latents[-1]
    recorder = CrossAttentionRecorder()
    trajectory, offsets = [], []
    with controlled_attention(unet, recorder):
        for i, t in enumerate(schedule.timesteps):
            recorder.step = i
            with torch.no_grad():
                recorder.maps = []
                eps = unet(torch.cat([reference, reference]), t, encoder_hidden_states=reference_context).sample
                reference_maps = [m.float() for m in recorder.maps]
                reference = schedule.step(guided(eps, guidance), t, reference)
                if hold_reference:
                    offsets.append(latents[n - i - 1] - reference)
                    reference = reference + offsets[-1]
            trajectory.append(reference)
            rows = torch.cat([x, x]).requires_grad_(True)
            with torch.enable_grad():
                recorder.maps = []
                unet(rows, t, encoder_hidden_states=edit_context)
                loss = sum(((m.float() - r) ** 2).sum((-2, -1)).mean() for m, r in zip(recorder.maps, reference_maps, strict=True))
                grad, = torch.autograd.grad(loss, rows)
            rows = rows.detach().add(grad, alpha=-weight)  # torch.optim.SGD's update
            with torch.no_grad():
                recorder.maps = []
                eps = unet(rows, t, encoder_hidden_states=edit_context).sample
                x = schedule.step(guided(eps, guidance), t, rows[:1])
                if hold_reference:
                    x = x + offsets[i]
    return Edited(x, trajectory, offsets)


@METHODS.register("pix2pix_zero")
class Pix2PixZero(PromptEditor):
    name = "pix2pix_zero"
    Config = Pix2PixZeroConfig
    inversions = ("ddim", "direct")
    schedule_source = "model"  # `DDIMScheduler.from_config(SD 1.4's scheduler config)`: 981, 961, …, 1

    def decode(self, latent: torch.Tensor) -> np.ndarray:
        """diffusers' `decode_latents` + `numpy_to_pil`: ×255 *rounded* (half to even), where the P2P-style
        scripts truncate."""
        image = decode_unit_float(self.models.vae, latent)[0].permute(1, 2, 0).float().cpu().numpy()
        return (image * 255).round().astype(np.uint8)

    def setup(self, models) -> None:
        super().setup(models)
        if self.config.prompt == "caption":
            self.captioner_spec = captioner.resolve_spec(self.config.captioner, models)

    def base_prompt(self, sample: PromptEditSample) -> tuple[str, str]:
        """(the prompt Pix2Pix-Zero inverts with and edits from, where it came from)."""
        if self.config.prompt == "source":
            return sample.encode_source_prompt, "source prompt"
        model, tokenizer, identity = captioner.build_captioner(self.captioner_spec, str(self.models.device))
        return captioner.caption(model, tokenizer, sample.image), identity

    @torch.no_grad()
    def edit(self, sample: PromptEditSample, seed: int) -> EditResult:
        c, m = self.config, self.models
        latent = self.encode_image(sample, torch.Generator(device=m.vae.device).manual_seed(seed))
        (base, origin), t_caption = timed(self.base_prompt, sample)
        base_embedding = m.encode_prompt(base)
        reg = NoiseRegularisation(c.lambda_ac, c.lambda_kl, c.regularisation_steps, c.autocorrelation_rolls)
        latents, t_inv = timed(invert, lambda x, t: self.eps(x, t, base_embedding), self.schedule, latent,
                               random.Random(seed), reg)
        direction = edit_direction(m.encode_prompt(sample.encode_source_prompt), m.encode_prompt(sample.encode_target_prompt))
        reference_context = torch.cat([base_embedding, base_embedding])
        edit_context = torch.cat([base_embedding, (base_embedding.float() + direction).to(base_embedding.dtype)])
        edited, t_edit = timed(cross_attention_guided_edit, m.unet, self.schedule, latents, reference_context,
                               edit_context, c.guidance, c.cross_attention_guidance, c.inversion == "direct")
        info = {"inversion": c.inversion, "seed": seed, "denoising_timesteps": self.schedule.timesteps,
                "base_prompt": base, "base_prompt_from": origin, "edit_direction_norm": float(direction.norm())}
        if edited.offsets:
            info["direct_offset_mean_abs"] = [float(o.abs().mean()) for o in edited.offsets]
        return EditResult(self.decode(edited.latent), info=info,
                          timings={"captioning": t_caption, "inversion": t_inv, "editing": t_edit})
