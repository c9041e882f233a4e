"""IP-Adapter image conditioning through diffusers' own IP-Adapter support (component kind `ip_adapter`).

Real weights load as diffusers' `load_ip_adapter` loads them: the adapter file (`image_proj` + `ip_adapter`
state dicts, converted by `UNet2DConditionModel._load_ip_adapter_weights` into `IPAdapterPlusImageProjection`
or `ImageProjection` and `IPAdapterAttnProcessor2_0`s) and a `CLIPVisionModelWithProjection` from
`<subfolder>/image_encoder`. Random builds write a random state dict **in the file's own key layout and
shapes** (`random_state_dict`) and feed it through the same conversion, so real and random weights share
every line after the file read; the image encoder is the same class with random weights (ViT-H/14 at full
size, a 4-layer tiny tower for tests).

The base model is shared by every method of a process, so the adapter never stays in the UNet: `attached`
installs its processors and projection for a block and restores the UNet afterwards (a method with
`ip_adapter: off` sees the plain UNet, bit-identical to a run without any adapter).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from harness.models.components import ComponentSpec, component_builder
from harness.models.weights import component_dir

# image encoder (CLIP vision tower + projection) and projection sizes per architecture key
_VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
              patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
_VIT_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, image_size=224,
                 patch_size=32, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)
# plus: Resampler (IP-Adapter `resampler.py`): width, heads of 64, depth 4, 16 queries, ff ×4
IP_ARCHS: dict[str, dict[str, Any]] = {
    "ip_adapter_plus": dict(encoder=_VIT_H, plus=True, width=768, heads=12, tokens=16),
    "ip_adapter_plus_tiny": dict(encoder=_VIT_TINY, plus=True, width=64, heads=1, tokens=16),
    "ip_adapter": dict(encoder=_VIT_H, plus=False, tokens=4),
    "ip_adapter_tiny": dict(encoder=_VIT_TINY, plus=False, tokens=4),
    # DiffEditor's image prompt (Adapter/DragonDiffusion ip_sd15_64.bin; harness/diffusion/image_prompt_bank.py):
    # width = the UNet's cross-attention width, 12 heads of 64, 64 queries, depth 4
    "diffeditor_ip": dict(encoder=_VIT_H, plus=True, width=768, heads=12, tokens=64),
    "diffeditor_ip_tiny": dict(encoder=_VIT_TINY, plus=True, width=32, heads=1, tokens=64),
}


@dataclass
class IPAdapter:
    """One loaded adapter: image encoder + preprocessing, the UNet's IP processors and image projection."""

    image_encoder: Any  # CLIPVisionModelWithProjection
    feature_extractor: Any  # CLIPImageProcessor
    processors: dict[str, Any]
    projection: torch.nn.Module  # MultiIPAdapterImageProjection
    plus: bool

    @torch.no_grad()
    def image_embeds(self, image: np.ndarray, with_uncond: bool = True) -> torch.Tensor:
        """The UNet's `added_cond_kwargs["image_embeds"][0]` for one uint8 H×W×3 image, (2, 1, S, D) =
        [zero image, image] with `with_uncond`, as RegionDrag's `ip_encode_image` and diffusers'
        `prepare_ip_adapter_image_embeds` stack them (Plus: penultimate hidden states, both from the encoder;
        original: projected image embedding, zeros for the unconditional half)."""
        param = next(self.image_encoder.parameters())
        pixels = self.feature_extractor(image, return_tensors="pt").pixel_values.to(param.device, param.dtype)
        if self.plus:
            cond = self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
            uncond = self.image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        else:
            cond = self.image_encoder(pixels).image_embeds
            uncond = torch.zeros_like(cond)
        embeds = torch.stack([uncond, cond]) if with_uncond else cond[None]
        return embeds

    @contextlib.contextmanager
    def attached(self, unet, scale: float) -> Iterator[None]:
        """The UNet with this adapter at `scale` inside the block (calls need `added_cond_kwargs=
        {"image_embeds": [embeds]}`); its own processors and projection afterwards, also on error."""
        from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0

        saved = _saved(unet)
        for proc in self.processors.values():
            if isinstance(proc, (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0)):
                proc.scale = [scale]
        unet.encoder_hid_proj = None
        unet.set_attn_processor(dict(self.processors))
        unet.encoder_hid_proj = self.projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        try:
            yield
        finally:
            _restore(unet, saved)


def random_state_dict(arch: str, unet, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """A random IP-Adapter checkpoint in the released file's layout (`image_proj`: the Resampler's or
    ImageProjModel's keys as IP-Adapter saves them; `ip_adapter`: `<i>.to_k_ip.weight`/`<i>.to_v_ip.weight`
    at the index of every cross-attention processor in `unet.attn_processors` order) for `unet`'s widths."""
    cfg = IP_ARCHS[arch]
    cross = unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(shape, generator=gen) * std

    emb = cfg["encoder"]["hidden_size"] if cfg["plus"] else cfg["encoder"]["projection_dim"]
    proj: dict[str, torch.Tensor] = {}
    if cfg["plus"]:
        width, inner = cfg["width"], cfg["heads"] * 64
        proj.update({"latents": rnd(1, cfg["tokens"], width, std=width ** -0.5), "proj_in.weight": rnd(width, emb),
                     "proj_in.bias": rnd(width), "proj_out.weight": rnd(cross, width), "proj_out.bias": rnd(cross),
                     "norm_out.weight": 1 + rnd(cross), "norm_out.bias": rnd(cross)})
        for i in range(4):
            for norm in ("norm1", "norm2"):
                proj[f"layers.{i}.0.{norm}.weight"], proj[f"layers.{i}.0.{norm}.bias"] = 1 + rnd(width), rnd(width)
            proj[f"layers.{i}.0.to_q.weight"] = rnd(inner, width)
            proj[f"layers.{i}.0.to_kv.weight"] = rnd(2 * inner, width)
            proj[f"layers.{i}.0.to_out.weight"] = rnd(width, inner)
            proj[f"layers.{i}.1.0.weight"], proj[f"layers.{i}.1.0.bias"] = 1 + rnd(width), rnd(width)
            proj[f"layers.{i}.1.1.weight"] = rnd(4 * width, width)
            proj[f"layers.{i}.1.3.weight"] = rnd(width, 4 * width)
    else:
        proj.update({"proj.weight": rnd(cfg["tokens"] * cross, emb), "proj.bias": rnd(cfg["tokens"] * cross),
                     "norm.weight": 1 + rnd(cross), "norm.bias": rnd(cross)})
    layers: dict[str, torch.Tensor] = {}
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name[: -len(".processor")]).to_k.out_features
            layers[f"{index}.to_k_ip.weight"] = rnd(hidden, cross)
            layers[f"{index}.to_v_ip.weight"] = rnd(hidden, cross)
    return {"image_proj": proj, "ip_adapter": layers}


def convert(unet, state_dict: dict[str, dict[str, torch.Tensor]]) -> tuple[dict[str, Any], torch.nn.Module]:
    """diffusers' conversion of a checkpoint into (attention processors, image projection), run on the base
    UNet and undone there at once (`IPAdapter.attached` installs them per use)."""
    saved = _saved(unet)
    try:
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its closing `unet.to(dtype)` warns about casting, a no-op here
        try:
            unet._load_ip_adapter_weights([state_dict], low_cpu_mem_usage=False)
        finally:
            diffusers_logging.set_verbosity(level)
        projection, unet.encoder_hid_proj = unet.encoder_hid_proj, None  # the Plus projection has processors too
        return dict(unet.attn_processors), projection
    finally:
        _restore(unet, saved)


def _saved(unet) -> tuple:
    """The UNet's own processors (without any projection's), projection and projection type."""
    projection, unet.encoder_hid_proj = unet.encoder_hid_proj, None
    processors, unet.encoder_hid_proj = dict(unet.attn_processors), projection
    return processors, projection, unet.config.encoder_hid_dim_type


def _restore(unet, saved: tuple) -> None:
    unet.encoder_hid_proj = None
    unet.set_attn_processor(saved[0])
    unet.encoder_hid_proj = saved[1]
    unet.config.encoder_hid_dim_type = saved[2]


def _feature_extractor(models, image_size: int):
    """The base pipeline's CLIP preprocessing where it has one (RegionDrag passes `pipe.feature_extractor`),
    else what `load_ip_adapter` creates: `CLIPImageProcessor(size, crop_size)` at the encoder's size."""
    from transformers import CLIPImageProcessor

    own = getattr(models.pipe, "feature_extractor", None)
    return own if own is not None else CLIPImageProcessor(size=image_size, crop_size=image_size)


def _files(spec: ComponentSpec) -> list[str]:
    folder = f"{spec.subfolder}/" if spec.subfolder else ""
    return [f"{folder}{spec.weight_name}", f"{folder}image_encoder/config.json",
            f"{folder}image_encoder/model.safetensors"]


@component_builder("ip_adapter", files=_files)
def build_ip_adapter(spec: ComponentSpec, variant: str, models) -> IPAdapter:
    """Real: the adapter file and image encoder from the component's directory; random/tiny: the
    architecture `spec.random_arch`/`spec.tiny_arch` with weights drawn from `spec.seed`."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from harness import determinism

    unet = models.unet
    if variant == "real":
        from diffusers.models.model_loading_utils import load_state_dict

        directory = component_dir(spec)
        folder = directory / (spec.subfolder or "")
        state_dict = load_state_dict(str(folder / spec.weight_name))
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder / "image_encoder"), dtype=models.dtype,
                                                                local_files_only=True)
    else:
        arch = spec.arch(variant)
        if arch not in IP_ARCHS:
            raise ValueError(f"component {spec.name!r}: unknown ip_adapter architecture {arch!r}; "
                             f"valid: {', '.join(IP_ARCHS)}")
        state_dict = random_state_dict(arch, unet, spec.seed)
        with determinism.seeded_global_rng(spec.seed), torch.device(models.device):
            encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**IP_ARCHS[arch]["encoder"]))
    processors, projection = convert(unet, state_dict)
    encoder = encoder.to(models.device, models.dtype).eval().requires_grad_(False)
    projection.eval().requires_grad_(False)
    return IPAdapter(encoder, _feature_extractor(models, encoder.config.image_size), processors, projection,
                     plus="latents" in state_dict["image_proj"])
