"""Images, prompts and the velocity call of a FLUX pipeline, as the FLUX editing releases do them.

Images: `x / 127.5 − 1` in float32, the VAE posterior **mean** (the releases' `DiagonalGaussian` has its noise
term commented out; FlowEdit calls `latent_dist.mode()`), `(z − shift_factor) · scaling_factor`, packed into
2×2 patches of 16 channels (64-wide tokens). Decoding inverts that, clamps to [−1, 1] and writes
`127.5 · (x + 1)` truncated to uint8 (`.byte()`, the black-forest-labs scripts) or `(x / 2 + 0.5) · 255`
rounded (`rounding="round"`: diffusers' image processor, which FlowEdit saves with).

Prompts: CLIP's pooled vector and T5's 512-token hidden states (`FluxPipeline.encode_prompt`). The timestep and
the guidance value enter the transformer in the latents' dtype, as both the releases and diffusers build them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class FlowText:
    """One encoded prompt: T5 states (1, 512, C), CLIP pooled (1, C'), text position ids (512, 3)."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    ids: torch.Tensor


@dataclass(frozen=True)
class Packed:
    """Packed latents (1, L, 64) with their image position ids (L, 3) and the pixel size they decode to."""

    latents: torch.Tensor
    ids: torch.Tensor
    height: int
    width: int


def encode_text(pipe, prompt: str, max_sequence_length: int = 512) -> FlowText:
    embeds, pooled, ids = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=pipe.transformer.device,
                                             max_sequence_length=max_sequence_length)
    return FlowText(embeds, pooled, ids)


def check_size(image: np.ndarray, sample_id: str) -> None:
    h, w = image.shape[:2]
    if h % 16 or w % 16:
        raise ValueError(f"{sample_id}: image is {w}×{h}; FLUX editors need sides divisible by 16 "
                         "(PIE-Bench images are 512×512)")


@torch.no_grad()
def encode_image(pipe, image: np.ndarray) -> Packed:
    vae = pipe.vae
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1
    x = x[None].to(vae.device, vae.dtype)
    z = vae.encode(x).latent_dist.mode()
    z = ((z - vae.config.shift_factor) * vae.config.scaling_factor).to(pipe.transformer.dtype)
    _, c, h, w = z.shape
    packed = pipe._pack_latents(z, 1, c, h, w)
    ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, z.device, z.dtype)
    return Packed(packed, ids, image.shape[0], image.shape[1])


@torch.no_grad()
def decode(pipe, packed: torch.Tensor, like: Packed, rounding: str = "truncate") -> np.ndarray:
    vae = pipe.vae
    z = pipe._unpack_latents(packed, like.height, like.width, pipe.vae_scale_factor)
    z = z.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    x = vae.decode(z).sample.float().clamp(-1, 1)[0].permute(1, 2, 0)
    if rounding == "truncate":
        return (127.5 * (x + 1.0)).to(torch.uint8).cpu().numpy()
    if rounding == "round":
        return ((x / 2 + 0.5) * 255).round().to(torch.uint8).cpu().numpy()
    raise ValueError(f"rounding must be 'truncate' or 'round', got {rounding!r}")


def velocity(transformer, x: torch.Tensor, t: float | torch.Tensor, text: FlowText, img_ids: torch.Tensor,
             guidance: float | None) -> torch.Tensor:
    """The transformer's velocity at time `t` (FLUX.1-dev is guidance-distilled: `guidance` is an input). A
    float `t` enters in the latents' dtype (the black-forest-labs loops); a 0-d tensor as it is (diffusers
    casts it, FlowEdit's `calc_v_flux`)."""
    if isinstance(t, torch.Tensor):
        t_vec = t.expand(x.shape[0])
    else:
        t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    g_vec = None
    if transformer.config.guidance_embeds:
        g_vec = torch.full((x.shape[0],), 1.0 if guidance is None else guidance, dtype=x.dtype, device=x.device)
    return transformer(hidden_states=x, timestep=t_vec, guidance=g_vec, pooled_projections=text.pooled,
                       encoder_hidden_states=text.embeds, txt_ids=text.ids, img_ids=img_ids, return_dict=False)[0]
