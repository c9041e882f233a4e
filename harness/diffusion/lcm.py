"""The latent-consistency add-ons of the fast drag methods, as components (harness/models/components.py):

- `lcm_lora`: `latent-consistency/lcm-lora-sdv1-5`, a LoRA that turns an SD 1.5 UNet (inpainting included)
  into a 4–8-step LCM sampler once fused (Inpaint4Drag);
- `taesd`: `madebyollin/taesd`, diffusers' `AutoencoderTiny`, a 2.4M-parameter drop-in for the SD VAE
  (Inpaint4Drag);
- `lcm_unet`: the UNet of `SimianLuo/LCM_Dreamshaper_v7`, an SD 1.5 UNet distilled for LCM with a guidance
  embedding input (`time_cond_proj_dim=256`) that FastDrag never feeds (Q-6).

Random builds keep each one's exact architecture (full size on `random_*` bases, tiny widths on the tiny
bases) with weights drawn from the component's seed; real builds read the files from the component's
directory. Applying them (fusing the LoRA into a copy of the UNet, swapping the VAE) is `lcm_inpaint_pipeline`.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from harness import determinism
from harness.models.components import ComponentSpec, component_builder
from harness.models.weights import component_dir

# LCM-LoRA SD 1.5: rank 64 on every attention, projection, feed-forward and ResNet layer (its file's keys)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv", "upsamplers.0.conv")
LORA_RANKS = {"lcm_lora_sd15": 64, "lcm_lora_tiny": 4}
TAESD_ARCHS: dict[str, dict[str, Any]] = {
    "taesd": {},  # AutoencoderTiny() defaults are TAESD's (2,445,063 parameters)
    "taesd_tiny": dict(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                       num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)),
}
LCM_UNET_ARCHS = {"lcm_unet_sd15": "sd15", "lcm_unet_tiny": "tiny"}  # base architecture + time_cond_proj_dim=256


def _arch(spec: ComponentSpec, variant: str, known: dict) -> str:
    arch = spec.arch(variant)
    if arch not in known:
        raise ValueError(f"component {spec.name!r}: unknown {spec.kind} architecture {arch!r} "
                         f"(conf/component/{spec.name}.yaml); valid: {', '.join(known)}")
    return arch


def random_lora(unet, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """A LoRA state dict (diffusers/PEFT keys `unet.<module>.lora_A/B.weight`) on every `LORA_TARGETS` layer
    of `unet`, seeded; B is small, not zero, so that fusing it visibly changes the weights."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not name.endswith(LORA_TARGETS) or not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        if isinstance(module, torch.nn.Linear):
            a_shape, b_shape = (rank, module.in_features), (module.out_features, rank)
        else:
            a_shape, b_shape = (rank, module.in_channels, *module.kernel_size), (module.out_channels, rank, 1, 1)
        state[f"unet.{name}.lora_A.weight"] = torch.randn(a_shape, generator=g) / a_shape[1] ** 0.5
        state[f"unet.{name}.lora_B.weight"] = torch.randn(b_shape, generator=g) * 1e-3
    return state


def _files(*names: str):
    """The hub files a real build reads (fetch and the weights lock), under the component's subfolder."""
    return lambda spec: ["/".join(p for p in (spec.subfolder, name) if p) for name in names]


@component_builder("lcm_lora", files=lambda spec: [spec.weight_name or "pytorch_lora_weights.safetensors"])
def build_lcm_lora(spec: ComponentSpec, variant: str, models) -> dict[str, torch.Tensor]:
    """The LoRA's state dict as diffusers' `load_lora_weights` takes it (its own key conversion included)."""
    if variant == "real":
        from safetensors.torch import load_file

        return load_file(str(component_dir(spec) / (spec.subfolder or "") / (spec.weight_name or "pytorch_lora_weights.safetensors")))
    return random_lora(models.unet, LORA_RANKS[_arch(spec, variant, LORA_RANKS)], spec.seed)


@component_builder("taesd", files=_files("config.json", "diffusion_pytorch_model.safetensors"))
def build_taesd(spec: ComponentSpec, variant: str, models):
    from diffusers import AutoencoderTiny

    if variant == "real":
        vae = AutoencoderTiny.from_pretrained(str(component_dir(spec) / (spec.subfolder or "")), torch_dtype=models.dtype,
                                              local_files_only=True)
    else:
        with determinism.seeded_global_rng(spec.seed):
            vae = AutoencoderTiny(**TAESD_ARCHS[_arch(spec, variant, TAESD_ARCHS)])
    return vae.to(models.device, models.dtype).eval().requires_grad_(False)


@component_builder("lcm_unet", files=_files("config.json", "diffusion_pytorch_model.safetensors"))
def build_lcm_unet(spec: ComponentSpec, variant: str, models):
    from diffusers import UNet2DConditionModel

    from harness.models.architectures import ARCHITECTURES

    if variant == "real":
        unet = UNet2DConditionModel.from_pretrained(str(component_dir(spec)), subfolder=spec.subfolder or "unet",
                                                    torch_dtype=models.dtype, variant=spec.variant,
                                                    use_safetensors=spec.use_safetensors, local_files_only=True)
    else:
        config = dict(ARCHITECTURES[LCM_UNET_ARCHS[_arch(spec, variant, LCM_UNET_ARCHS)]]["unet"], time_cond_proj_dim=256)
        with determinism.seeded_global_rng(spec.seed):
            unet = UNet2DConditionModel(**config)
    return unet.to(models.device, models.dtype).eval().requires_grad_(False)


def lcm_inpaint_pipeline(models, lora: dict[str, torch.Tensor] | None, vae) -> Any:
    """An inpainting pipeline on the base model's text encoder with LCMScheduler, the LoRA fused into a
    copy of the UNet (the base model's UNet is shared process-wide and stays untouched) and `vae` (TAESD)
    in place of the SD VAE (None keeps it) — Inpaint4Drag's `setup_pipeline`."""
    from diffusers import LCMScheduler, StableDiffusionInpaintPipeline

    base = models.pipe
    unet = copy.deepcopy(base.unet)
    pipe = StableDiffusionInpaintPipeline(vae=vae if vae is not None else base.vae, text_encoder=base.text_encoder,
                                          tokenizer=base.tokenizer, unet=unet,
                                          scheduler=LCMScheduler.from_config(base.scheduler.config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights({k: v.to(models.device, models.dtype) for k, v in lora.items()}, adapter_name="lcm")
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    return pipe


class GraphedPipelineUNet(torch.nn.Module):
    """A diffusers pipeline's UNet whose plain calls (`unet(x, t, encoder_hidden_states=…)`, no extra
    conditioning) replay as CUDA graphs through `GraphedUNet`; anything else runs the UNet eagerly. The
    pipeline still reads `config`, `dtype` and `device` from it. Same kernels, so the same outputs."""

    def __init__(self, unet) -> None:
        from harness.diffusion.graphs import GraphedUNet

        super().__init__()
        self.unet = unet
        self.graphed = GraphedUNet(unet)
        self.config = unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, return_dict: bool = True,
                **extra: Any):
        if any(v is not None for v in extra.values()):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict, **extra)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        out = self.graphed(sample, timestep, encoder_hidden_states)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)
