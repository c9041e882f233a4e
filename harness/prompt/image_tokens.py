"""CLIP ViT-B/16 image tokens, the input of StyleDiffusion's mapping network.

PnPInversion's StyleDiffusion (`models/stylediffusion/utils.py` `Trainer`, `clip_util.py`) loads
`clip.load('ViT-B/16')` and replaces its `VisionTransformer.forward` so that it returns `ln_post` of **all**
197 tokens (class token + 14×14 patches), 768 wide, without the projection. transformers' CLIP vision tower
gives the same thing as `post_layernorm(last_hidden_state)`.

`spec` (method field `style_image_encoder`):
- a hub id or local directory of a transformers CLIP checkpoint — `openai/clip-vit-base-patch16` holds the
  OpenAI ViT-B/16 weights the `clip` package loads;
- `random`: the full ViT-B/16 architecture with seeded random weights (GPU timing);
- `random_tiny`: the same 224/16 patch grid (197 tokens), 32 wide (CPU tests with the tiny model, whose
  text embeddings are 32 wide too: the tokens modulate the text embedding element-wise).
A random-weight diffusion model always gets a random encoder (`resolve_spec`), as pretrained image features
next to a random UNet measure nothing; the record names what ran.

Preprocessing as released: the image in [-1, 1] back to [0, 1] (`Normalize(-1, 2)`), torchvision 0.13's
tensor `Resize(224, bicubic)` of the shorter side — tensors were not antialiased in that release —,
`CenterCrop(224)`, CLIP mean/std. `clip.load` keeps the checkpoint's float16 weights on CUDA, so the encoder
runs in float16 there (float32 on the CPU) and the tokens are cast to float32, as the reference does.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from harness.metrics.clip_vit import clip_normalize
from harness.metrics.networks import RANDOM_SPECS, load_network

log = logging.getLogger(__name__)

VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, image_size=224,
               patch_size=16, hidden_act="quick_gelu")
VIT_B16_TINY = dict(VIT_B16, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
RANDOM_SEED = 0
INPUT_SIZE = 224


def resolve_spec(spec: str, models) -> str:
    """The encoder to build for `models`: `spec` itself, or for a random-weight diffusion model the random
    architecture of its size (full ViT-B/16 next to 768-wide text embeddings, the tiny one otherwise)."""
    if not models.is_random or spec in RANDOM_SPECS:
        return spec
    width = models.text_encoder.config.hidden_size
    chosen = "random" if width == VIT_B16["hidden_size"] else "random_tiny"
    log.warning("random-weight model: StyleDiffusion image encoder %s instead of %s", chosen, spec)
    return chosen


@lru_cache(maxsize=4)
def build_encoder(spec: str, device: str) -> tuple[torch.nn.Module, str]:
    """(`CLIPVisionModel` in eval mode on `device`, float16 on CUDA; identity). Built once per process."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    model = load_network(spec, "method.p2p.style_image_encoder",
                         lambda s: CLIPVisionModel(CLIPVisionConfig(**(VIT_B16 if s == "random" else VIT_B16_TINY))),
                         CLIPVisionModel.from_pretrained, RANDOM_SEED)
    identity = f"{spec}:clip-vit-b16-arch:seed{RANDOM_SEED}" if spec in RANDOM_SPECS else f"pretrained:{spec}"
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False), identity


def preprocess(image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 H×W×3 → (1, 3, 224, 224) CLIP input, float32, as the reference's tensor transform chain."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    x = (x + 1) / 2
    h, w = x.shape[-2:]
    short = min(h, w)
    size = (INPUT_SIZE, int(INPUT_SIZE * w / short)) if h <= w else (int(INPUT_SIZE * h / short), INPUT_SIZE)
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=False)
    top, left = (int(round((n - INPUT_SIZE) / 2.0)) for n in x.shape[-2:])  # torchvision's CenterCrop offsets
    return clip_normalize(x[..., top:top + INPUT_SIZE, left:left + INPUT_SIZE])


@torch.no_grad()
def image_tokens(encoder: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    """(1, tokens, width) float32: `post_layernorm` of every output token."""
    dtype = next(encoder.parameters()).dtype
    device = next(encoder.parameters()).device
    out = encoder(pixel_values=preprocess(image, device).to(dtype)).last_hidden_state
    tower = getattr(encoder, "vision_model", encoder)  # transformers < 5 nests the tower
    return tower.post_layernorm(out).float()
