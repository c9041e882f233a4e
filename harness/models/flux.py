"""FLUX.1 pipelines (`pipeline: flux` and `pipeline: flux_kontext`): exact architectures for random-weight
builds, the offline T5 tokenizer, and loading real weights.

`flux_dev` is FLUX.1-dev's network (and FLUX.1-Kontext-dev's, which has the same shapes): the MM-DiT with 19
double-stream and 38 single-stream blocks, 24 heads of 128 (11.9B parameters), guidance embedding; the T5-XXL
encoder (4.76B); CLIP ViT-L/14's text tower for the pooled vector; the 16-channel VAE with its
`scaling_factor` 0.3611 and `shift_factor` 0.1159. `tiny` keeps every block count (19 + 38 blocks, so the
editors' layer indices — RF-Solver's single blocks 20–37 — stay valid) and the 512-token T5 context, with
widths shrunk to a few MB.

Random builds draw their weights directly on the target device in the target dtype (`torch.device` and the
default dtype as context): the full-size bf16 build takes seconds on a GPU and never holds an fp32 copy
(12B parameters in fp32 would be 48 GB).

The tokenizers are built offline: CLIP's BPE from open-clip's vocabulary (harness/models/tokenizer.py, the
real ids) and a small SentencePiece-style Unigram tokenizer for T5 (characters and word-initial
characters; pad 0, eos 1, unk 2 as in T5's vocabulary, other ids differ from the real T5 tokenizer's —
random weights have no meaning for them anyway).
"""
from __future__ import annotations

import contextlib
import string
from functools import lru_cache
from typing import Any, Iterator

import torch

from harness import determinism

FLUX_PIPELINES = ("flux", "flux_kontext")
_VAE_BLOCKS = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
# FLUX.1-dev's scheduler_config.json: dynamic shifting between seq len 256 (μ 0.5) and 4096 (μ 1.15)
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=4096)

FLUX_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "flux_dev": dict(
        transformer=dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                         num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                         guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        t5=dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                layer_norm_epsilon=1e-6, tie_word_embeddings=False),
        clip=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                 latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False, **_VAE_BLOCKS),
    ),
    "tiny": dict(
        transformer=dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=16,
                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                         guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
        t5=dict(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
                relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                tie_word_embeddings=False),
        clip=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                 norm_num_groups=32, latent_channels=16, sample_size=128, scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False, **_VAE_BLOCKS),
    ),
}


@lru_cache(maxsize=None)
def t5_tokenizer():
    """A T5 tokenizer built offline (Metaspace pre-tokenizer, Unigram pieces, `</s>` appended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = list(string.ascii_letters + string.digits + string.punctuation)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -2.5) for c in chars] + [(c, -3.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                           model_max_length=512)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def build_random_flux(arch: str, seed: int, device: torch.device | str, pipeline: str = "flux",
                      dtype: torch.dtype = torch.float32):
    """A FluxPipeline (or FluxKontextPipeline) of architecture `arch` with weights drawn after
    `torch.manual_seed(seed)`, built on `device` in `dtype`."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxPipeline,
                           FluxTransformer2DModel)
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from harness.models.tokenizer import clip_tokenizer

    try:
        spec = FLUX_ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown random FLUX architecture {arch!r}; valid: {sorted(FLUX_ARCHITECTURES)}") from None
    with determinism.seeded_global_rng(seed), torch.device(device), _default_dtype(dtype):
        transformer = FluxTransformer2DModel(**spec["transformer"])
        vae = AutoencoderKL(**spec["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["clip"]))
        text_encoder_2 = T5EncoderModel(T5Config(**spec["t5"]))
    cls = FluxKontextPipeline if pipeline == "flux_kontext" else FluxPipeline
    return cls(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae, text_encoder=text_encoder,
               tokenizer=clip_tokenizer(), text_encoder_2=text_encoder_2, tokenizer_2=t5_tokenizer(),
               transformer=transformer)


def load_pretrained_flux(directory: str, pipeline: str, dtype: torch.dtype, use_safetensors: bool = True):
    """`from_pretrained` of a FLUX.1 directory (a hub snapshot or a local copy). black-forest-labs/FLUX.1-dev and
    FLUX.1-Kontext-dev are gated repositories: accept the licence on the hub and log in before `fetch`."""
    from diffusers import FluxKontextPipeline, FluxPipeline

    cls = FluxKontextPipeline if pipeline == "flux_kontext" else FluxPipeline
    return cls.from_pretrained(directory, torch_dtype=dtype, use_safetensors=use_safetensors, local_files_only=True)
