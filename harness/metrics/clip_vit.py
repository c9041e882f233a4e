"""OpenAI CLIP ViT-B/32 image embeddings (`encode_image`: class token → LayerNorm → projection, 512-d), as
Paint-by-Example's evaluation tools use them (`clip.load("ViT-B/32")`, fp16 on the GPU).

`clip_vit_b32` (features config):
- a hub id or local directory for transformers' `CLIPVisionModelWithProjection` — `openai/clip-vit-base-patch32`
  holds the same weights as the `clip` package's ViT-B/32 (a full `CLIPModel` checkpoint loads too); loading
  and its errors are shared with the PIE-Bench networks (`harness.metrics.networks`);
- `random`: the exact ViT-B/32 vision tower (models.md §2.5) with seeded random weights (GPU smoke runs);
- `random_tiny`: the same block structure with tiny widths (CPU tests).

Preprocessing (`clip_preprocess`) is the `clip` package's: Resize(224, bicubic) of the short side, CenterCrop
224, RGB, ToTensor, CLIP mean/std, on PIL images with torchvision.
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from harness.metrics.networks import load_network

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_B32 = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, image_size=224,
               patch_size=32, hidden_act="quick_gelu", projection_dim=512)
VIT_B32_TINY = dict(VIT_B32, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                    projection_dim=16)
PREPROCESS = "CLIP preprocess: Resize(224, bicubic) short side, CenterCrop(224), RGB, ToTensor, CLIP mean/std"


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def clip_preprocess():
    """The `clip` package's ViT-B/32 `preprocess` transform (picklable)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), _to_rgb,
                      T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def clip_normalize(x: torch.Tensor) -> torch.Tensor:
    """CLIP mean/std on a [0, 1] (…, 3, H, W) tensor."""
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


def build_clip_vit_b32(source: str, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """`CLIPVisionModelWithProjection` for `source` (`features.clip_vit_b32`, see `harness.metrics.networks`);
    returns (model in eval mode, identity)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    architectures = {"random": VIT_B32, "random_tiny": VIT_B32_TINY}
    model = load_network(source, "features.clip_vit_b32",
                         lambda spec: CLIPVisionModelWithProjection(CLIPVisionConfig(**architectures[spec])),
                         CLIPVisionModelWithProjection.from_pretrained, seed)
    if source == "random":
        return model.eval(), f"clip-vit-b32:random-seed{seed}"
    if source == "random_tiny":
        return model.eval(), f"clip-vit-b32-tiny:random-seed{seed}"
    return model.eval(), f"clip-vit-b32:{source}"


class ClipImageEmbedding:
    """Feature extractor (`harness.metrics.frechet.FeatureExtractor`): CLIP `preprocess` → projected image
    embedding (not L2-normalised), in `dtype` (float16 on the GPU like the reference, float32 on the CPU)."""

    preprocess = PREPROCESS

    def __init__(self, source: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0) -> None:
        model, self.identity = build_clip_vit_b32(source, seed)
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(self.device, dtype).requires_grad_(False)
        self.dim = int(model.config.projection_dim)
        self.transform = clip_preprocess()

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Image embeddings of already CLIP-normalised 224² tensors."""
        return self.model(pixel_values=batch.to(self.device, self.dtype)).image_embeds

    def describe(self) -> dict[str, Any]:
        return {"network": self.identity, "dims": self.dim, "dtype": str(self.dtype).replace("torch.", "")}


def shared_clip_vit_b32(context: Any) -> ClipImageEmbedding:
    """The metric context's CLIP ViT-B/32 (`features.clip_vit_b32`, float16 on the GPU as the reference
    runs it), built once and shared by every metric that uses it."""
    source = str(context.features.get("clip_vit_b32", "openai/clip-vit-base-patch32"))
    dtype = context.dtype(torch.float16)
    return context.shared(("clip_vit_b32", source, dtype),
                          lambda: ClipImageEmbedding(source, context.device, dtype, context.seed))
