"""Image ↔ latent conversions with the rounding rules the reference implementations use."""
from __future__ import annotations

import numpy as np
import torch


def image_to_tensor(image: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 H×W×3 → float (1, 3, H, W) in [-1, 1] as `ToTensor()(img) * 2 - 1`."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).to(device)
    return (x.permute(2, 0, 1)[None].to(torch.float32) / 255.0 * 2 - 1).to(dtype)


@torch.no_grad()
def encode(vae, image: np.ndarray, generator: torch.Generator | None, dtype: torch.dtype, mode: str = "sample") -> torch.Tensor:
    """Scaled VAE latent of `image` (native resolution; heights that are not multiples of 8 are floored)."""
    x = image_to_tensor(image, vae.device, vae.dtype)
    dist = vae.encode(x).latent_dist
    z = dist.sample(generator=generator) if mode == "sample" else dist.mode()
    return (z * vae.config.scaling_factor).to(dtype)


@torch.no_grad()
def decode(vae, latent: torch.Tensor) -> torch.Tensor:
    """Decode to float (B, 3, h, w) in [0, 1] (float32), before any resize or quantisation."""
    image = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor).sample / 2 + 0.5
    return image.clamp(0, 1).float()


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


def decode_to_uint8(vae, latent: torch.Tensor) -> np.ndarray:
    """Decode to uint8 H×W×3, truncating `x * 255` as RegionDrag and DragDiffusion do (not rounding)."""
    return to_uint8(decode(vae, latent))


def resolve_vae(models, vae: str) -> tuple[object, str]:
    """The VAE a method encodes and decodes with, and its identity for records and cache keys.

    `default` is the model's own VAE. Anything else is a hub id or local path (GoodDrag's bench uses
    `stabilityai/sd-vae-ft-mse`). A random-weight model keeps its own VAE, since a pretrained VAE paired
    with a random UNet measures nothing either; the identity says so.
    """
    if vae == "default":
        return models.vae, "model"
    if models.is_random:
        import logging

        logging.getLogger(__name__).warning("random-weight model: using its own VAE instead of %s", vae)
        return models.vae, f"model (random build; {vae} needs real weights)"
    from diffusers import AutoencoderKL

    module = AutoencoderKL.from_pretrained(vae, torch_dtype=models.dtype).to(models.device)
    return module.eval().requires_grad_(False), vae
