"""Image ↔ latent conversions with the rounding rules the reference implementations use."""
from __future__ import annotations

import numpy as np
import torch


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
def decode_to_uint8(vae, latent: torch.Tensor) -> np.ndarray:
    """Decode to uint8 H×W×3 as RegionDrag and DragDiffusion do: `x * 255` computed in the model dtype
    on the host (float16 for fp16 models), then truncated (not rounded)."""
    image = vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor).sample / 2 + 0.5
    image = image.clamp(0, 1)[0].permute(1, 2, 0)
    image = (image.float() if image.dtype == torch.bfloat16 else image).cpu().numpy()  # numpy has no bf16
    return (image * 255).astype(np.uint8)
