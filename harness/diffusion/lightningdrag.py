"""LightningDrag's trained modules (component kind `lightningdrag`; LightningDrag/LightningDrag @73de513,
protocols_2025.md §4), written on diffusers' UNet2DConditionModel and attention API.

- **Point maps** (`point_map`): a zero map at image resolution with point i written as the value i+1 at its
  (row, col) pixel — the release's `points_to_disk_map` (despite the name, one pixel per point).
- **PointEmbedding**: conv 2→2e, three stride-2 SiLU conv blocks (→ 16e channels at 1/8), three more (→ 128e at
  1/64); every scale split in half into handle / target features (e = 16: 128, 256, 512, 1024 channels). Its
  parameter names are those of `point_embedding/point_embedding.pt`, so the released file loads as is.
- **PointAttnProcessor** (every self-attention of the denoising UNet): K/V from cat[own tokens, the appearance
  encoder's tokens of the same block]; LayerNorm + bias-free Linear of the point features at the block's
  resolution, zeroed again in the unconditional half (`uc_mask`); **key += cat[target, handle]**, **query +=
  target**. The weights (`norm`, `proj`) load from `lightning-drag-sd15-attn.bin`, whose keys are
  `<i>.norm.*`/`<i>.proj.weight` at the index i of every attn1 in `unet.attn_processors` order (the odd
  indices hold IP-Adapter weights, which the release overwrites with `ip-adapter_sd15.bin`'s: component
  `ip_adapter_sd15` supplies them here).
- **Appearance encoder**: a UNet2DConditionModel with the base UNet's config and `in_channels=4` (the
  release's copy drops conv_out and the last block's unused layers; their outputs never reach the bank, so the
  missing keys are harmless). `record_bank` runs it once and returns every BasicTransformerBlock's norm1
  output. The release pairs reader/writer blocks by stable-sorting both by width and zipping; both UNets
  share one architecture, so that pairs each block with the block of the same name, which is how they pair here.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.components import ComponentSpec, component_builder
from harness.models.weights import component_dir

# architecture key → point-embedding width e (the release: PointEmbeddingModel(embed_dim=16))
LD_ARCHS: dict[str, dict[str, int]] = {"lightningdrag_sd15": dict(embed_dim=16), "lightningdrag_tiny": dict(embed_dim=1)}
DECAYS = ("none", "linear", "square", "quadratic", "inv_square")


def point_map(points_rc: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(H, W) long map, zero except value i+1 at point i's (row, col); a later duplicate overwrites."""
    out = torch.zeros((height, width), dtype=torch.long, device=points_rc.device)
    if len(points_rc):
        out[points_rc[:, 0].long(), points_rc[:, 1].long()] = torch.arange(len(points_rc), device=points_rc.device) + 1
    return out


def guidance_at(scale: float, decay: str, step: int, steps: int) -> float:
    """The point-guidance scale at step `step` of `steps` (the release's `guidance_scale_decay` options;
    LightningDrag uses `inv_square`: (g−1)(1−i/N)² + 1)."""
    r = step / steps
    if decay == "none":
        return scale
    if decay == "linear":
        return scale * (1.0 - r) + r
    if decay == "square":
        return scale * (1.0 - r ** 2) + r ** 2
    if decay == "quadratic":
        return scale * (1.0 - r ** 3) + r ** 3
    if decay == "inv_square":
        return (scale - 1.0) * (1.0 - r) ** 2 + 1
    raise ValueError(f"guidance decay must be one of {DECAYS}, got {decay!r}")


class _ConvBlock(nn.Module):
    """conv (stride s) → SiLU → conv → SiLU, 3×3, no bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv2(F.silu(self.conv1(x))))


class PointEmbedding(nn.Module):
    """Handle/target point maps → per-scale (1/8 … 1/64) handle and target features."""

    def __init__(self, embed_dim: int = 16) -> None:
        super().__init__()
        width = 2 * embed_dim
        self.conv_in = nn.Conv2d(2, width, 3, padding=1, bias=False)
        self.downsample_blocks_vae = nn.Sequential(*[_ConvBlock(width * 2 ** i, width * 2 ** (i + 1)) for i in range(3)])
        self.downsample_blocks_unet = nn.ModuleList([_ConvBlock(width * 8 * 2 ** i, width * 8 * 2 ** (i + 1)) for i in range(3)])
        self.output_dim = [embed_dim * 8 * 2 ** i for i in range(4)]  # per-half channels at 1/8, 1/16, 1/32, 1/64

    def forward(self, handle_map: torch.Tensor, target_map: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = self.downsample_blocks_vae(self.conv_in(torch.cat([handle_map, target_map], dim=1)))
        scales = [x]
        for block in self.downsample_blocks_unet:
            x = block(x)
            scales.append(x)
        return [s.chunk(2, dim=1)[0] for s in scales], [s.chunk(2, dim=1)[1] for s in scales]


@dataclass
class DragState:
    """What the point processors read during one edit: per block the appearance tokens, the point features
    of every scale, and the rows of the batch that are unconditional."""

    bank: dict[str, torch.Tensor] = field(default_factory=dict)  # attn1 module name → (B, N, C)
    handle: list[torch.Tensor] = field(default_factory=list)
    target: list[torch.Tensor] = field(default_factory=list)
    uc_mask: torch.Tensor | None = None  # (B,) bool


class PointAttnProcessor(nn.Module):
    """Self-attention with the appearance bank and the point embeddings added to query and key (module
    docstring). Only SD 1.5's self-attention form is handled (3-D tokens, no group/spatial norm, no mask)."""

    def __init__(self, name: str, embed_dim: int, hidden_size: int, state: DragState) -> None:
        super().__init__()
        self.name = name
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Linear(embed_dim, hidden_size, bias=False)
        self.state = state

    def _features(self, maps: list[torch.Tensor], tokens: int) -> torch.Tensor:
        lengths = [m.shape[2] * m.shape[3] for m in maps]
        if tokens not in lengths:
            raise ValueError(f"lightningdrag: no point-embedding scale has {tokens} tokens (scales: {lengths}); "
                             "image sides must be multiples of 64")
        feats = self.proj(self.norm(maps[lengths.index(tokens)].flatten(2).transpose(1, 2)))
        if self.state.uc_mask is not None:
            feats = feats.masked_fill(self.state.uc_mask[:, None, None], 0.0)
        return feats

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs) -> torch.Tensor:
        batch = hidden_states.shape[0]
        context = torch.cat([hidden_states, self.state.bank[self.name]], dim=1)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        if self.state.handle:
            tokens = hidden_states.shape[1]
            handle, target = self._features(self.state.handle, tokens), self._features(self.state.target, tokens)
            key = key + torch.cat([target, handle], dim=1)
            query = query + target
        head = key.shape[-1] // attn.heads
        q, k, v = (x.view(batch, -1, attn.heads, head).transpose(1, 2) for x in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, attn.heads * head)
        return attn.to_out[1](attn.to_out[0](out.to(query.dtype))) / attn.rescale_output_factor


def self_attention_names(unet) -> list[str]:
    """Names of every BasicTransformerBlock's attn1 processor, in `unet.attn_processors` order."""
    return [n for n in unet.attn_processors if n.endswith("attn1.processor")]


def embed_scales(unet) -> dict[str, int]:
    """attn1 processor name → index of the point-embedding scale its block runs at (the release's
    `set_up_point_attn_processor` walk: down blocks count up after each downsampler, up blocks down)."""
    scale, out = 0, {}
    for i, block in enumerate(unet.down_blocks):
        for name in self_attention_names(unet):
            if name.startswith(f"down_blocks.{i}."):
                out[name] = scale
        scale += block.downsamplers is not None
    for name in self_attention_names(unet):
        if name.startswith("mid_block."):
            out[name] = scale
    for i, block in enumerate(unet.up_blocks):
        for name in self_attention_names(unet):
            if name.startswith(f"up_blocks.{i}."):
                out[name] = scale
        scale -= block.upsamplers is not None
    return out


@dataclass
class LightningDragModules:
    """The loaded component: appearance encoder, point embedding, and one PointAttnProcessor per attn1 of
    the base UNet (sharing `state`)."""

    appearance_encoder: Any  # UNet2DConditionModel, in_channels=4
    point_embedding: PointEmbedding
    processors: dict[str, PointAttnProcessor]
    state: DragState

    @torch.no_grad()
    def record_bank(self, latents: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Appearance encoder once at t = 0: attn1 processor name → that block's norm1 output."""
        bank: dict[str, torch.Tensor] = {}
        hooks = []
        for name in self_attention_names(self.appearance_encoder):
            module = self.appearance_encoder.get_submodule(name[: -len(".processor")])
            hooks.append(module.register_forward_pre_hook(
                lambda _m, args, kwargs, name=name: bank.__setitem__(name, (args[0] if args else kwargs["hidden_states"]).clone()),
                with_kwargs=True))
        try:
            self.appearance_encoder(latents, 0, encoder_hidden_states=text, return_dict=False)
        finally:
            for hook in hooks:
                hook.remove()
        # the release's `ReferenceAttentionControl.update` casts the bank to float16 whatever the run's dtype
        # (a no-op in its fp16 runs, a rounding in float32 ones): kept, so float32 runs match it too
        return {name: tokens.to(torch.float16).to(latents.dtype) for name, tokens in bank.items()}

    @contextlib.contextmanager
    def attached(self, unet) -> Iterator[DragState]:
        """The UNet's self-attentions replaced by the point processors inside the block (call after any
        IP-Adapter attachment, whose restore then undoes both); the state to fill for the calls."""
        saved = {n: p for n, p in unet.attn_processors.items() if n in self.processors}
        for name, proc in self.processors.items():
            unet.get_submodule(name[: -len(".processor")]).set_processor(proc)
        try:
            yield self.state
        finally:
            for name, proc in saved.items():
                unet.get_submodule(name[: -len(".processor")]).set_processor(proc)
            self.state.bank, self.state.handle, self.state.target, self.state.uc_mask = {}, [], [], None


def random_attn_state_dict(unet, embed_dim: int, seed: int) -> dict[str, torch.Tensor]:
    """A random `lightning-drag-sd15-attn.bin` in the file's layout for `unet` (point weights only: the IP
    entries come from the IP-Adapter component). The projection is non-zero so the points act."""
    gen = torch.Generator().manual_seed(seed)
    widths = PointEmbedding(embed_dim).output_dim
    scales = embed_scales(unet)
    out: dict[str, torch.Tensor] = {}
    for index, name in enumerate(unet.attn_processors):
        if name in scales:
            dim, hidden = widths[scales[name]], unet.get_submodule(name[: -len(".processor")]).to_q.out_features
            out[f"{index}.norm.weight"] = 1 + 0.02 * torch.randn(dim, generator=gen)
            out[f"{index}.norm.bias"] = 0.02 * torch.randn(dim, generator=gen)
            out[f"{index}.proj.weight"] = 0.02 * torch.randn(hidden, dim, generator=gen)
    return out


def _files(spec: ComponentSpec) -> list[str]:
    return ["appearance_encoder/config.json", "appearance_encoder/diffusion_pytorch_model.safetensors",
            "point_embedding/point_embedding.pt", "lightning-drag-sd15-attn.bin"]


@component_builder("lightningdrag", files=_files)
def build_lightningdrag(spec: ComponentSpec, variant: str, models) -> LightningDragModules:
    """Real: the three files of LightningDrag/lightning-drag-sd15; random/tiny: the same modules with weights
    drawn from `spec.seed` (appearance encoder from the base UNet's config, `in_channels=4`)."""
    from diffusers import UNet2DConditionModel

    from harness import determinism

    unet = models.unet
    config = dict(unet.config, in_channels=4)  # a copy: Q-21 (the release mutates the base config) stays out
    if variant == "real":
        from diffusers.models.model_loading_utils import load_state_dict

        directory = component_dir(spec)
        embed_dim = LD_ARCHS["lightningdrag_sd15"]["embed_dim"]
        encoder = UNet2DConditionModel.from_config(config)
        missing = encoder.load_state_dict(load_state_dict(str(directory / _files(spec)[1])), strict=False).missing_keys
        if any(not k.startswith(("conv_out", "conv_norm_out", "up_blocks.3.attentions.2")) for k in missing):
            raise ValueError(f"{directory}: appearance encoder lacks weights {missing[:5]}")
        point_embedding = PointEmbedding(embed_dim)
        point_embedding.load_state_dict(torch.load(directory / _files(spec)[2], map_location="cpu", weights_only=True))
        attn = torch.load(directory / _files(spec)[3], map_location="cpu", weights_only=True)
    else:
        arch = spec.arch(variant)
        if arch not in LD_ARCHS:
            raise ValueError(f"component {spec.name!r}: unknown lightningdrag architecture {arch!r}; valid: {', '.join(LD_ARCHS)}")
        embed_dim = LD_ARCHS[arch]["embed_dim"]
        with determinism.seeded_global_rng(spec.seed):
            encoder = UNet2DConditionModel.from_config(config)
            point_embedding = PointEmbedding(embed_dim)
        attn = random_attn_state_dict(unet, embed_dim, spec.seed)
    state = DragState()
    scales, names = embed_scales(unet), list(unet.attn_processors)
    processors = {}
    for name, scale in scales.items():
        index = names.index(name)
        proc = PointAttnProcessor(name, point_embedding.output_dim[scale],
                                  unet.get_submodule(name[: -len(".processor")]).to_q.out_features, state)
        proc.load_state_dict({k: attn[f"{index}.{k}"] for k in ("norm.weight", "norm.bias", "proj.weight")})
        processors[name] = proc.to(models.device, models.dtype).eval().requires_grad_(False)
    encoder = encoder.to(models.device, models.dtype).eval().requires_grad_(False)
    point_embedding = point_embedding.to(models.device, models.dtype).eval().requires_grad_(False)
    return LightningDragModules(encoder, point_embedding, processors, state)
