"""Run the FLUX editing releases' own transformer code on a diffusers `FluxTransformer2DModel`'s weights, for
the parity checks of benchmarks/parity_flow_releases.py.

RF-Solver-Edit, FireFlow and KV-Edit ship copies of black-forest-labs' `flux` package with their editing
hooks inside its blocks (`info` dicts), so their loops need *their* `Flux` module. `bfl_state_dict` maps the
diffusers weights onto it (the inverse of diffusers' `convert_flux_to_diffusers.py`: fused qkv and
linear1, (shift, scale) of the final modulation swapped); `load_release` imports one release's `flux`
package from a directory of fetched code (never part of editlab) under a clean module name.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch


def bfl_state_dict(transformer) -> dict[str, torch.Tensor]:
    sd, out = transformer.state_dict(), {}

    def linear(dst: str, *srcs: str) -> None:
        out[f"{dst}.weight"] = torch.cat([sd[f"{s}.weight"] for s in srcs])
        if f"{srcs[0]}.bias" in sd:
            out[f"{dst}.bias"] = torch.cat([sd[f"{s}.bias"] for s in srcs])

    linear("img_in", "x_embedder")
    linear("txt_in", "context_embedder")
    for dst, src in (("time_in", "timestep_embedder"), ("guidance_in", "guidance_embedder"), ("vector_in", "text_embedder")):
        linear(f"{dst}.in_layer", f"time_text_embed.{src}.linear_1")
        linear(f"{dst}.out_layer", f"time_text_embed.{src}.linear_2")
    for i in range(len(transformer.transformer_blocks)):
        d, b = f"double_blocks.{i}", f"transformer_blocks.{i}"
        linear(f"{d}.img_mod.lin", f"{b}.norm1.linear")
        linear(f"{d}.txt_mod.lin", f"{b}.norm1_context.linear")
        linear(f"{d}.img_attn.qkv", f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v")
        linear(f"{d}.txt_attn.qkv", f"{b}.attn.add_q_proj", f"{b}.attn.add_k_proj", f"{b}.attn.add_v_proj")
        linear(f"{d}.img_attn.proj", f"{b}.attn.to_out.0")
        linear(f"{d}.txt_attn.proj", f"{b}.attn.to_add_out")
        for stream, ff in (("img", "ff"), ("txt", "ff_context")):
            linear(f"{d}.{stream}_mlp.0", f"{b}.{ff}.net.0.proj")
            linear(f"{d}.{stream}_mlp.2", f"{b}.{ff}.net.2")
        for stream, norm in (("img", ""), ("txt", "added_")):
            out[f"{d}.{stream}_attn.norm.query_norm.scale"] = sd[f"{b}.attn.norm_{norm}q.weight"]
            out[f"{d}.{stream}_attn.norm.key_norm.scale"] = sd[f"{b}.attn.norm_{norm}k.weight"]
    for i in range(len(transformer.single_transformer_blocks)):
        d, b = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        linear(f"{d}.linear1", f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v", f"{b}.proj_mlp")
        linear(f"{d}.linear2", f"{b}.proj_out")
        linear(f"{d}.modulation.lin", f"{b}.norm.linear")
        out[f"{d}.norm.query_norm.scale"] = sd[f"{b}.attn.norm_q.weight"]
        out[f"{d}.norm.key_norm.scale"] = sd[f"{b}.attn.norm_k.weight"]
    scale, shift = sd["norm_out.linear.weight"].chunk(2)
    out["final_layer.adaLN_modulation.1.weight"] = torch.cat([shift, scale])
    scale, shift = sd["norm_out.linear.bias"].chunk(2)
    out["final_layer.adaLN_modulation.1.bias"] = torch.cat([shift, scale])
    linear("final_layer.linear", "proj_out")
    return out


def load_release(src: Path):
    """Import `flux` from `src` (a release's source folder), replacing any earlier release's `flux`."""
    for name in [m for m in sys.modules if m == "flux" or m.startswith("flux.")]:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        return importlib.import_module("flux.model"), importlib.import_module("flux.sampling")
    finally:
        sys.path.remove(str(src))


def bfl_model(model_module, transformer, cls_name: str = "Flux"):
    """The release's `Flux` (or `Flux_kv`) with the diffusers transformer's weights."""
    cfg = transformer.config
    params = model_module.FluxParams(
        in_channels=cfg.in_channels, vec_in_dim=cfg.pooled_projection_dim, context_in_dim=cfg.joint_attention_dim,
        hidden_size=cfg.num_attention_heads * cfg.attention_head_dim, mlp_ratio=4.0, num_heads=cfg.num_attention_heads,
        depth=cfg.num_layers, depth_single_blocks=cfg.num_single_layers, axes_dim=list(cfg.axes_dims_rope),
        theta=10_000, qkv_bias=True, guidance_embed=cfg.guidance_embeds)
    model = getattr(model_module, cls_name)(params).to(transformer.dtype)
    missing, unexpected = model.load_state_dict(bfl_state_dict(transformer), strict=True)
    assert not missing and not unexpected
    return model.eval().requires_grad_(False)
