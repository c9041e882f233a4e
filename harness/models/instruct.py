"""Instruction-editing pipelines (model `pipeline: instruct_pix2pix | qwen_image_edit`): random builds of the
exact architectures and real-weights loading, both through diffusers' own pipelines.

- `instruct_pix2pix` (`StableDiffusionInstructPix2PixPipeline`; InstructPix2Pix `timbrooks/instruct-pix2pix`,
  MagicBrush's fine-tune `vinesmsuic/magicbrush-jul7`): SD 1.5 with an **8-channel** UNet input (4 noisy
  latent + 4 source-image latent), CLIP ViT-L/14 text encoder, and the Euler-ancestral scheduler the hub
  repositories ship (the release samples with k-diffusion's `sample_euler_ancestral`). `arch`: `sd15` (full
  size) or `tiny` (harness/models/architectures.py).
- `qwen_image_edit` (`QwenImageEditPipeline`, `Qwen/Qwen-Image-Edit`): the 20B MM-DiT (60 blocks, 24 heads of
  128, text width 3584), the Qwen-Image causal-3D VAE (16 latent channels) and Qwen2.5-VL-7B as the text
  encoder, which also sees the source image. `arch`: `qwen_image` (full size, built on the device in the
  model's dtype: bf16 for timing) or `tiny`; both use the random judge's offline byte-level tokenizer and the
  real processor classes (harness/judges/random_judge.py), so the token count of the prompt template differs
  from the real tokenizer's (the pipeline's fixed 64-token template drop then cuts elsewhere: random weights
  only).
"""
from __future__ import annotations

from typing import Any

import torch

from harness import determinism

INSTRUCT_PIPELINES = ("instruct_pix2pix", "qwen_image_edit")

# FlowMatchEulerDiscreteScheduler of Qwen/Qwen-Image-Edit (scheduler/scheduler_config.json)
QWEN_SCHEDULER = dict(base_image_seq_len=256, base_shift=0.5, invert_sigmas=False, max_image_seq_len=8192,
                      max_shift=0.9, num_train_timesteps=1000, shift=1.0, shift_terminal=0.02,
                      stochastic_sampling=False, time_shift_type="exponential", use_beta_sigmas=False,
                      use_dynamic_shifting=True, use_exponential_sigmas=False, use_karras_sigmas=False)
# transformer/config.json and vae/config.json of Qwen/Qwen-Image-Edit (= diffusers' class defaults), and a
# tiny variant with the same block types, patching (2×2), latent channels (16) and RoPE axes layout
QWEN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen_image": dict(
        transformer=dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                         num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
                         axes_dims_rope=(16, 56, 56)),
        vae=dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0),
        text_encoder="random_7b"),
    "tiny": dict(
        transformer=dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
                         num_attention_heads=2, joint_attention_dim=64, guidance_embeds=False,
                         axes_dims_rope=(4, 6, 6)),
        vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0),
        text_encoder="random_tiny"),
}


def build_random(pipeline: str, arch: str, seed: int, device: torch.device | str, dtype: torch.dtype) -> Any:
    """A random-weight `pipeline` of architecture `arch`, built under `seed` directly on `device` (in `dtype`
    for Qwen-Image-Edit: a float32 20B transformer would not fit a GPU)."""
    if pipeline == "instruct_pix2pix":
        return _random_instruct_pix2pix(arch, seed, device)
    try:
        spec = QWEN_ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown qwen_image_edit architecture {arch!r}; valid: {sorted(QWEN_ARCHITECTURES)}") from None
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLForConditionalGeneration

    from harness.judges import random_judge

    default = torch.get_default_dtype()
    with determinism.seeded_global_rng(seed), torch.device(device):
        torch.set_default_dtype(dtype)
        try:
            transformer = QwenImageTransformer2DModel(**spec["transformer"])
            vae = AutoencoderKLQwenImage(**spec["vae"])
            text_encoder = Qwen2_5_VLForConditionalGeneration(random_judge.config(spec["text_encoder"]))
        finally:
            torch.set_default_dtype(default)
    pixels = random_judge.TINY_PIXELS if arch == "tiny" else None
    processor = random_judge.processor(pixels)
    return QwenImageEditPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_SCHEDULER), vae=vae,
                                 text_encoder=text_encoder, tokenizer=processor.tokenizer, processor=processor,
                                 transformer=transformer)


def _random_instruct_pix2pix(arch: str, seed: int, device: torch.device | str) -> Any:
    from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from harness.models.architectures import ARCHITECTURES, PNDM_SCHEDULER
    from harness.models.tokenizer import clip_tokenizer

    try:
        spec = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown instruct_pix2pix architecture {arch!r}; valid: {sorted(ARCHITECTURES)}") from None
    with determinism.seeded_global_rng(seed), torch.device(device):
        unet = UNet2DConditionModel(**dict(spec["unet"], in_channels=8))
        vae = AutoencoderKL(**spec["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["text"]))
    schedule = {k: v for k, v in PNDM_SCHEDULER.items() if k not in ("skip_prk_steps", "set_alpha_to_one")}
    scheduler = EulerAncestralDiscreteScheduler(**schedule, prediction_type=spec["prediction_type"])
    return StableDiffusionInstructPix2PixPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(spec["pad_token"]),
                                                  unet=unet, scheduler=scheduler, safety_checker=None,
                                                  feature_extractor=None, requires_safety_checker=False)


def load_pretrained(pipeline: str, directory: str, dtype: torch.dtype, variant: str | None, use_safetensors: bool) -> Any:
    """`from_pretrained` of the diffusers pipeline class for `pipeline` from a checked local `directory`."""
    from diffusers import QwenImageEditPipeline, StableDiffusionInstructPix2PixPipeline

    if pipeline == "qwen_image_edit":
        return QwenImageEditPipeline.from_pretrained(directory, torch_dtype=dtype, variant=variant,
                                                     use_safetensors=use_safetensors, local_files_only=True)
    return StableDiffusionInstructPix2PixPipeline.from_pretrained(
        directory, torch_dtype=dtype, variant=variant, use_safetensors=use_safetensors, safety_checker=None,
        requires_safety_checker=False, local_files_only=True)
