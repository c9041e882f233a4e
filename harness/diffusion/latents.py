"""Image ↔ latent conversions with the rounding rules the reference implementations use."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.diffusion.numerics import check_finite


def image_to_tensor(image: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 H×W×3 → (1, 3, H, W) in [-1, 1] exactly as `ToTensor()(img).to(dtype) * 2 - 1`: the division
    in float32, the affine map in the model dtype (the rounding RegionDrag's fp16 encoder sees)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).to(device)
    return (x.permute(2, 0, 1)[None].to(torch.float32) / 255.0).to(dtype) * 2 - 1


@torch.no_grad()
def encode(vae, image: np.ndarray, generator: torch.Generator | None, dtype: torch.dtype, mode: str = "sample") -> torch.Tensor:
    """Scaled VAE latent of `image` (native resolution; heights that are not multiples of 8 are floored)."""
    x = image_to_tensor(image, vae.device, vae.dtype)
    dist = vae.encode(x).latent_dist
    z = dist.sample(generator=generator) if mode == "sample" else dist.mode()
    return (z * vae.config.scaling_factor).to(dtype)


@torch.no_grad()
def decode_to_uint8(vae, latent: torch.Tensor, info: dict[str, Any] | None = None) -> np.ndarray:
    """Decode to uint8 H×W×3 as RegionDrag and DragDiffusion do: `x * 255` computed in the model dtype on
    the host (float16 for fp16 models), then truncated (not rounded).

    A half-precision VAE can overflow (activations above 65504 become Inf, then NaN); the decode is then
    redone in float32, as diffusers does for VAEs that need it (`upcast_vae`), and `info["vae_upcast"]` is
    set so the record says so. A latent that is itself non-finite, or a decode that stays non-finite in
    float32, raises `NonFiniteError` instead of becoming a black image that a metric would score.
    """
    check_finite(latent, "latent before vae_decode")
    image = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor).sample
    if vae.dtype != torch.float32 and not bool(torch.isfinite(image).all()):
        image = _decode_float32(vae, latent)
        if info is not None:
            info["vae_upcast"] = {"from": str(vae.dtype).replace("torch.", ""), "reason": "non-finite half-precision decode"}
    check_finite(image, "vae_decode")
    image = (image / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0)
    image = (image.float() if image.dtype == torch.bfloat16 else image).cpu().numpy()  # numpy has no bf16
    return (image * 255).astype(np.uint8)


def _decode_float32(vae, latent: torch.Tensor) -> torch.Tensor:
    """One float32 decode with the shared VAE, restored to its dtype afterwards (also on error)."""
    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        return vae.decode(latent.to(torch.float32) / vae.config.scaling_factor).sample
    finally:
        vae.to(dtype)
