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
    image = (_decode_checked(vae, latent, info) / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0)
    if image.dtype == torch.bfloat16:  # the references go through numpy, which has no bf16: float32 there
        image = image.float()
    # On the device, then copied as uint8: bit-identical to the references' host-side numpy
    # `(x * 255).astype(uint8)` (one correctly rounded multiply in the same dtype, then truncation; checked
    # for every fp16 value in [0, 1] by tests/test_latents.py), and 20 ms less per image than numpy's
    # emulated float16 arithmetic.
    return (image * 255).to(torch.uint8).cpu().numpy()


def _decode_float32(vae, latent: torch.Tensor) -> torch.Tensor:
    """One float32 decode with the shared VAE, restored to its dtype afterwards (also on error)."""
    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        return vae.decode(latent.to(torch.float32) / vae.config.scaling_factor).sample
    finally:
        vae.to(dtype)


def _decode_checked(vae, latent: torch.Tensor, info: dict[str, Any] | None) -> torch.Tensor:
    """The VAE output in [-1, 1] (model dtype), redone in float32 if a half-precision decode overflowed."""
    check_finite(latent, "latent before vae_decode")
    image = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor).sample
    if vae.dtype != torch.float32 and not bool(torch.isfinite(image).all()):
        image = _decode_float32(vae, latent)
        if info is not None:
            info["vae_upcast"] = {"from": str(vae.dtype).replace("torch.", ""), "reason": "non-finite half-precision decode"}
    return check_finite(image, "vae_decode")


@torch.no_grad()
def decode(vae, latent: torch.Tensor, info: dict[str, Any] | None = None) -> torch.Tensor:
    """Decode to float32 (B, 3, h, w) in [0, 1], before any resize or quantisation: DragDiffusion and its
    descendants resize the float image to the source size and only then truncate (`to_uint8`)."""
    return (_decode_checked(vae, latent, info).float() / 2 + 0.5).clamp(0, 1)


def to_uint8(image: torch.Tensor, rounding: str = "truncate") -> np.ndarray:
    """First image of a [0, 1] batch → uint8 H×W×3.

    `truncate` is `(x * 255).astype(uint8)` (RegionDrag, DragDiffusion and its descendants); `round` is
    torchvision's `save_image` (`x * 255 + 0.5`, clamped), which SDE-Drag uses to write its results.
    """
    x = image[0].permute(1, 2, 0).float().cpu().numpy() * 255
    if rounding == "round":
        x = np.clip(x + 0.5, 0, 255)
    elif rounding != "truncate":
        raise ValueError(f"rounding must be 'truncate' or 'round', got {rounding!r}")
    return x.astype(np.uint8)


def resolve_vae(models, vae: str) -> tuple[object, str]:
    """The VAE a method encodes and decodes with, and its identity for records and cache keys.

    `default` is the model's own VAE. Anything else is a hub id (`owner/name@commit` pins a revision) or local
    path (GoodDrag's bench uses `stabilityai/sd-vae-ft-mse`), loaded through the weights lock
    (harness/models/weights.py). A random-weight model keeps its own VAE, since a pretrained VAE paired
    with a random UNet measures nothing either; the identity says so.
    """
    if vae == "default":
        return models.vae, "model"
    if models.is_random:
        import logging

        logging.getLogger(__name__).warning("random-weight model: using its own VAE instead of %s", vae)
        return models.vae, f"model (random build; {vae} needs real weights)"
    from diffusers import AutoencoderKL

    from harness.models.sources import network_source
    from harness.models.weights import checked_dir

    directory = checked_dir(network_source(vae, "method.vae", "diffusers_model"))
    module = AutoencoderKL.from_pretrained(str(directory), torch_dtype=models.dtype,
                                           local_files_only=True).to(models.device)
    return module.eval().requires_grad_(False), vae
