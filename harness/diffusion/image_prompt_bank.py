"""DiffEditor's image prompt and memory bank in one attention controller, and its adapter component.

The release (MC-E/DragonDiffusion @f9b5bdf, `src/unet/attention_processor.py`, `src/models/dragondiff.py`)
replaces every self-attention processor by one with a K/V memory bank (up blocks: recorded during inversion,
concatenated while editing) and every cross-attention processor by an IP-Adapter one whose image term is
added only while 10 ≤ i < 20. `ImagePromptBank` does both through `controlled_attention`, so the same
UNet also serves, with the controller idle, as DiffEditor's plain "estimator" UNet.

The adapter (`Adapter/DragonDiffusion` `model/ip_sd15_64.bin`: a Resampler of depth 4, 12 heads and 64
queries over the penultimate hidden states of the `h94/IP-Adapter` ViT-H image encoder, plus `to_k_ip`/
`to_v_ip` per cross-attention) is the component kind `diffeditor_ip`: it loads through the IP-Adapter
plumbing of `harness.diffusion.ip_adapter` (diffusers' checkpoint conversion into
`IPAdapterPlusImageProjection` and IP processors, whose `to_k_ip`/`to_v_ip` layers the controller uses).
Real weights: the checkpoint from the component's directory and the image encoder of the
`ip_adapter_plus_sd15` component (the release loads it from `h94/IP-Adapter` `models/image_encoder`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from harness.diffusion.attention import transformer_blocks
from harness.diffusion.ip_adapter import IP_ARCHS, IPAdapter, convert, random_state_dict
from harness.diffusion.kv_bank import SelfAttentionBank
from harness.models.components import ComponentSpec, component_builder

ENCODER_COMPONENT = "ip_adapter_plus_sd15"


class ImagePromptBank(SelfAttentionBank):
    """`SelfAttentionBank` (record / concat on the up blocks) plus the image prompt's decoupled
    cross-attention: `scale · softmax(q·k_ipᵀ)·v_ip` with k_ip, v_ip from `ip_tokens` (batch-aligned with
    the call) through the block's `to_k_ip`/`to_v_ip`, added while `ip_scale` is non-zero."""

    def __init__(self, blocks: frozenset[int], ip_layers: dict[int, tuple[Any, Any]], from_step: int = 5,
                 keep: str = "device") -> None:
        super().__init__(blocks, from_step, keep)
        self.ip_layers = ip_layers
        self.ip_tokens: torch.Tensor | None = None
        self.ip_scale = 0.0

    def extra_attention(self, block, is_cross, q):
        if not is_cross or self.ip_tokens is None or not self.ip_scale:
            return None
        to_k, to_v = self.ip_layers[block]
        batch, heads, _, dim = q.shape
        tokens = self.ip_tokens.to(q.dtype)

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, dim).transpose(1, 2)

        ip = F.scaled_dot_product_attention(q, split(to_k(tokens)), split(to_v(tokens)), scale=dim ** -0.5)
        return self.ip_scale * ip


def ip_layers_by_block(unet, adapter: IPAdapter) -> dict[int, tuple[Any, Any]]:
    """Transformer-block index → (to_k_ip, to_v_ip) of its cross-attention's IP processor."""
    names = {id(module): name for name, module in unet.named_modules()}
    out = {}
    for index, block in enumerate(transformer_blocks(unet)):
        processor = adapter.processors[f"{names[id(block.attn2)]}.processor"]
        out[index] = (processor.to_k_ip[0], processor.to_v_ip[0])
    return out


@torch.no_grad()
def image_tokens(adapter: IPAdapter, image) -> torch.Tensor:
    """(2, 64, D) = [image prompt of a zero image, of `image`] (`get_image_embeds`: penultimate CLIP
    hidden states through the Resampler)."""
    hidden = adapter.image_embeds(image)  # (2, 1, S, D_clip)
    resampler = adapter.projection.image_projection_layers[0]
    return resampler(hidden[:, 0])


def _files(spec: ComponentSpec) -> list[str]:
    return ["/".join(p for p in (spec.subfolder, spec.weight_name) if p)]


@component_builder("diffeditor_ip", files=_files)
def build_diffeditor_ip(spec: ComponentSpec, variant: str, models) -> IPAdapter:
    """Real: the checkpoint + the h94/IP-Adapter image encoder; random/tiny: `random_arch`/`tiny_arch`
    of `IP_ARCHS` with weights drawn from `spec.seed` (the checkpoint's own key layout, one conversion)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from harness import determinism
    from harness.models.weights import component_dir

    if variant == "real":
        from diffusers.models.model_loading_utils import load_state_dict

        state_dict = load_state_dict(str(component_dir(spec) / (spec.subfolder or "") / spec.weight_name))
        encoder_spec = ComponentSpec.read(ENCODER_COMPONENT)
        folder = component_dir(encoder_spec) / (encoder_spec.subfolder or "") / "image_encoder"
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder), dtype=models.dtype, local_files_only=True)
    else:
        arch = spec.arch(variant)
        if arch not in IP_ARCHS:
            raise ValueError(f"component {spec.name!r}: unknown architecture {arch!r}; valid: {', '.join(IP_ARCHS)}")
        state_dict = random_state_dict(arch, models.unet, spec.seed)
        with determinism.seeded_global_rng(spec.seed), torch.device(models.device):
            encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**IP_ARCHS[arch]["encoder"]))
    processors, projection = convert(models.unet, state_dict)
    for proc in processors.values():
        if isinstance(proc, torch.nn.Module):
            proc.to(models.device, models.dtype).requires_grad_(False)
    encoder = encoder.to(models.device, models.dtype).eval().requires_grad_(False)
    projection.to(models.device, models.dtype).eval().requires_grad_(False)
    return IPAdapter(encoder, CLIPImageProcessor(), processors, projection, plus=True)
