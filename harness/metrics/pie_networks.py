"""The networks of the PIE-Bench metric suite, built once per process (cached in the `MetricContext`).

Feature keys (conf/features/*.yaml):
- `dino_vitb8`: DINO ViT-B/8 for the structure distance. A hub id or local directory of a transformers
  `ViTModel` checkpoint (`facebook/dino-vitb8`, the converted `dino_vitb8` torch-hub model that the
  reference loads), `random` (the exact ViT-B/8 architecture, models.md §2.5) or `random_tiny` (same
  patch grid, tiny widths: CPU tests).
- `clip_vitl14`: OpenAI CLIP ViT-L/14 for the CLIP scores. A hub id or local directory
  (`openai/clip-vit-large-patch14`), `random` or `random_tiny`.
  Both are resolved by `harness.metrics.networks.load_network`, as the @pbe metrics' CLIP ViT-B/32 is.
- `lpips_squeeze_backbone`: `standard` (torchvision's ImageNet SqueezeNet 1.1, downloaded by the lpips
  package), a local torchvision `squeezenet1_1().features` state dict, or `random` (seeded backbone, the
  package's real LPIPS v0.1 heads).

Random networks are seeded (`seed` 0) and named `random…` in their identity, so reports flag smoke runs.
The lpips package's SqueezeNet LPIPS is the network torchmetrics' `LearnedPerceptualImagePatchSimilarity(
net_type='squeeze')` wraps (same backbone slices, heads and scaling); a test checks the two agree.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from harness.metrics.features import MetricContext, load_state_dict_file
from harness.store import file_sha256
from harness.metrics.networks import RANDOM_SPECS, load_network, seeded

DINO_VITB8 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  patch_size=8, image_size=224, qkv_bias=True, layer_norm_eps=1e-6)
DINO_TINY = DINO_VITB8 | dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

CLIP_VITL14 = dict(
    text_config=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                     num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                       image_size=224, patch_size=14, hidden_act="quick_gelu"),
    projection_dim=768)
CLIP_TINY = dict(
    text_config=CLIP_VITL14["text_config"] | dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                                  num_hidden_layers=2),
    vision_config=CLIP_VITL14["vision_config"] | dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                                      num_hidden_layers=2),
    projection_dim=16)

RANDOM_SEED = 0


def build_dino(spec: str) -> tuple[Any, str]:
    """(ViTModel without pooling layer, identity)."""
    from transformers import ViTConfig, ViTModel

    architectures = {"random": DINO_VITB8, "random_tiny": DINO_TINY}
    model = load_network(
        spec, "features.dino_vitb8", lambda s: ViTModel(ViTConfig(**architectures[s]), add_pooling_layer=False),
        # DINO's LayerNorm eps is 1e-6 (the original timm blocks); keep it whatever the checkpoint's config says.
        lambda source: ViTModel.from_pretrained(source, add_pooling_layer=False, layer_norm_eps=1e-6), RANDOM_SEED)
    return model.eval(), _identity(spec, "dino-vitb8")


def _identity(spec: str, arch: str) -> str:
    return f"{spec}:{arch}-arch:seed{RANDOM_SEED}" if spec in RANDOM_SPECS else f"pretrained:{spec}"


def last_layer_key_projection(model) -> torch.nn.Module:
    """The key projection of the last transformer layer (transformers 5 `layers[i].attention.k_proj`;
    older releases `encoder.layer[i].attention.attention.key`)."""
    layers = getattr(model, "layers", None)
    if layers is not None:
        return layers[-1].attention.k_proj
    return model.encoder.layer[-1].attention.attention.key


def build_clip(spec: str) -> tuple[Any, Any, Any, str]:
    """(CLIPModel, tokenizer, PIL image processor, identity). The processor is the PIL one the reference's
    transformers version used (shorter side → 224 bicubic, centre crop 224, CLIP mean/std)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    def random(spec: str) -> tuple[Any, Any, Any]:
        from harness.models.tokenizer import clip_tokenizer

        config = CLIPConfig(**(CLIP_VITL14 if spec == "random" else CLIP_TINY))
        return CLIPModel(config), clip_tokenizer(), CLIPImageProcessorPil()

    def pretrained(source: str) -> tuple[Any, Any, Any]:
        return (CLIPModel.from_pretrained(source), CLIPTokenizer.from_pretrained(source),
                CLIPImageProcessorPil.from_pretrained(source))

    model, tokenizer, processor = load_network(spec, "features.clip_vitl14", random, pretrained, RANDOM_SEED)
    return model.eval(), tokenizer, processor, _identity(spec, "clip-vit-l14")


def build_lpips_squeeze(backbone: str) -> tuple[Any, str]:
    """lpips v0.1 SqueezeNet LPIPS with the requested backbone; returns (model, identity)."""
    import lpips

    warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
    if backbone == "standard":
        return lpips.LPIPS(net="squeeze", version="0.1", verbose=False).eval(), "lpips-0.1:squeeze:torchvision-imagenet"
    model = seeded(RANDOM_SEED, lambda: lpips.LPIPS(net="squeeze", version="0.1", pnet_rand=True, verbose=False)).eval()
    if backbone == "random":
        return model, f"lpips-0.1:squeeze:random-backbone-seed{RANDOM_SEED}"
    load_squeezenet_features(model.net, load_state_dict_file(backbone), Path(backbone).name)
    return model, f"lpips-0.1:squeeze:file-sha256:{file_sha256(backbone)[:16]}"


def load_squeezenet_features(net: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a torchvision `squeezenet1_1().features` state dict (keys `<index>.…`) into lpips' slices,
    which keep the torchvision indices as module names."""
    slice_of = {name.split(".")[1]: name.split(".")[0] for name, _ in net.named_modules() if name.count(".") == 1}
    try:
        mapped = {f"{slice_of[k.split('.')[0]]}.{k}": v for k, v in state.items()}
    except KeyError as exc:
        raise ValueError(f"{origin}: key {exc} is not a torchvision squeezenet1_1().features index") from None
    net.load_state_dict(mapped, strict=True)


def dino(context: MetricContext):
    spec = str(context.features.get("dino_vitb8", "facebook/dino-vitb8"))
    return context.shared(("dino_vitb8", spec), lambda: _to_device(build_dino(spec), context))


def clip(context: MetricContext):
    spec = str(context.features.get("clip_vitl14", "openai/clip-vit-large-patch14"))
    return context.shared(("clip_vitl14", spec), lambda: _to_device(build_clip(spec), context))


def lpips_squeeze(context: MetricContext):
    backbone = str(context.features.get("lpips_squeeze_backbone", "standard"))
    return context.shared(("lpips_squeeze", backbone), lambda: _to_device(build_lpips_squeeze(backbone), context))


def _to_device(built: tuple, context: MetricContext) -> tuple:
    return (built[0].to(context.device), *built[1:])
