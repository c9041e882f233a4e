"""The networks of the instruction-editing metrics (MagicBrush `evaluation/image_eval.py`), built once per
process in the `MetricContext`.

- CLIP ViT-B/32 (`features.clip_vit_b32`, the same setting as the @pbe metrics): the image tower is the shared
  `clip_vit.shared_clip_vit_b32` (the `clip` package's preprocess; float16 on the GPU, as `clip.load` runs);
  the text tower (`CLIPTextModelWithProjection`: end-of-text token → final LayerNorm → projection, the
  `clip` package's `encode_text`) and tokenizer come from the same checkpoint, in the same dtype. The
  random stand-ins use the OpenAI BPE built offline and a text tower matching the image tower's projection.
- DINO ViT-S/16 (`features.dino_vits16`): a transformers `ViTModel` checkpoint (`facebook/dino-vits16`, the
  converted `torch.hub.load('facebookresearch/dino:main', 'dino_vits16')` MagicBrush loads), `random` or
  `random_tiny`; its embedding is the class token after the final LayerNorm (the hub model's `forward`),
  float32 as MagicBrush runs it. Preprocess: PIL `Resize(256, bicubic)`, `CenterCrop(224)`, ImageNet mean/std.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from harness.metrics.clip_vit import shared_clip_vit_b32
from harness.metrics.networks import RANDOM_SPECS, load_network

RANDOM_SEED = 0
CLIP_B32_TEXT = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                     num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=512)
CLIP_B32_TEXT_TINY = dict(CLIP_B32_TEXT, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                          num_hidden_layers=2, projection_dim=16)
DINO_VITS16 = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                   patch_size=16, image_size=224, qkv_bias=True, layer_norm_eps=1e-6)
DINO_VITS16_TINY = dict(DINO_VITS16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DINO_PREPROCESS = "PIL Resize(256, bicubic) short side, CenterCrop(224), ToTensor, ImageNet mean/std"


def _clip_source(context: Any) -> str:
    return str(context.features.get("clip_vit_b32", "openai/clip-vit-base-patch32"))


def _dino_source(context: Any) -> str:
    return str(context.features.get("dino_vits16", "facebook/dino-vits16"))


def clip_image_embedding(context: Any, image: np.ndarray) -> np.ndarray:
    """`encode_image` of one uint8 H×W×3 image (not normalised), as float32 on the host (the reference's `.float()`)."""
    clip = shared_clip_vit_b32(context)
    with torch.no_grad():
        return clip.embed(clip.transform(Image.fromarray(image))[None])[0].float().cpu().numpy()


def build_clip_text(source: str, seed: int) -> tuple[Any, Any]:
    """(`CLIPTextModelWithProjection`, tokenizer) of the `features.clip_vit_b32` checkpoint; random stand-ins
    are drawn under `seed`, the image tower's seed (`clip_vit.shared_clip_vit_b32`)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    def random(spec: str) -> tuple[Any, Any]:
        from harness.models.tokenizer import clip_tokenizer

        config = CLIP_B32_TEXT if spec == "random" else CLIP_B32_TEXT_TINY
        return CLIPTextModelWithProjection(CLIPTextConfig(**config)), clip_tokenizer()

    def pretrained(directory: str) -> tuple[Any, Any]:
        return CLIPTextModelWithProjection.from_pretrained(directory), CLIPTokenizer.from_pretrained(directory)

    model, tokenizer = load_network(source, "features.clip_vit_b32", random, pretrained, seed)
    return model.eval(), tokenizer


def clip_text_embedding(context: Any, text: str) -> np.ndarray | None:
    """`encode_text` of `text` as float32, or None when it is longer than CLIP's 77-token context (the
    reference's `clip.tokenize` raises there rather than truncating)."""
    source, dtype = _clip_source(context), context.dtype(torch.float16)

    def build() -> tuple[Any, Any]:
        model, tokenizer = build_clip_text(source, context.seed)
        return model.to(context.device, dtype).requires_grad_(False), tokenizer

    model, tokenizer = context.shared(("clip_vit_b32_text", source, dtype), build)
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=False, return_tensors="pt").input_ids
    if ids.shape[1] > 77:
        return None
    with torch.no_grad():
        return model(input_ids=ids.to(context.device)).text_embeds[0].float().cpu().numpy()


def clip_identity(context: Any) -> str:
    return shared_clip_vit_b32(context).identity


def build_dino_vits16(source: str) -> tuple[torch.nn.Module, str]:
    """(`ViTModel` without pooler in eval mode, identity) for `features.dino_vits16`."""
    from transformers import ViTConfig, ViTModel

    architectures = {"random": DINO_VITS16, "random_tiny": DINO_VITS16_TINY}
    model = load_network(
        source, "features.dino_vits16", lambda s: ViTModel(ViTConfig(**architectures[s]), add_pooling_layer=False),
        lambda d: ViTModel.from_pretrained(d, add_pooling_layer=False, layer_norm_eps=1e-6), RANDOM_SEED)
    identity = f"{source}:dino-vits16-arch:seed{RANDOM_SEED}" if source in RANDOM_SPECS else f"pretrained:{source}"
    return model.eval(), identity


def dino(context: Any) -> tuple[torch.nn.Module, str]:
    source = _dino_source(context)

    def build() -> tuple[torch.nn.Module, str]:
        model, identity = build_dino_vits16(source)
        return model.to(context.device).requires_grad_(False), identity

    return context.shared(("dino_vits16", source), build)


def dino_preprocess():
    from torchvision import transforms as T

    return T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def dino_embedding(context: Any, image: np.ndarray) -> np.ndarray:
    """The DINO ViT-S/16 class token of one uint8 image, float32 on the host."""
    model, _ = dino(context)
    x = dino_preprocess()(Image.fromarray(image))[None].to(context.device)
    with torch.no_grad():
        return model(pixel_values=x).last_hidden_state[0, 0].float().cpu().numpy()
