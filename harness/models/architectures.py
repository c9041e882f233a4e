"""Exact Stable Diffusion architectures (models.md §2) for random-weight builds.

`sd15`/`sd21` are the full-size networks (859.5M / 865.9M UNet parameters); `tiny`/`tiny_sd21` keep the
block structure (four levels, 16 transformer blocks, ×8 VAE) so every layer index and feature
resolution that methods and metrics rely on stays valid, with only the widths shrunk.

`image_encoder` is the CLIP vision tower of Paint-by-Example's condition (`PaintByExampleImageEncoder`:
class token → mapper → LayerNorm → projection to the UNet's cross-attention width): CLIP ViT-L/14 at full
size; the tiny one keeps four layers so that its mapper still has one block ((layers + 1) // 5).
"""
from __future__ import annotations

from typing import Any

_SD_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
_SD_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
_VAE_BLOCKS = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)

# The scheduler values every SD 1.x/2.x method starts from. No `timestep_spacing` key, exactly like the
# hub's SD 1.5 scheduler file: DPMSolverMultistepScheduler.from_config then uses `linspace`
# (models.md §2.1), which is what RegionDrag's published numbers were made with.
SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
# What the SD hub repositories ship: a PNDM scheduler (it has no `clip_sample` argument).
PNDM_SCHEDULER = {k: v for k, v in SCHEDULER.items() if k != "clip_sample"} | {"skip_prk_steps": True}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "sd15": dict(
        unet=dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                  layers_per_block=2, down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                  cross_attention_dim=768, attention_head_dim=8),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), latent_channels=4,
                 layers_per_block=2, sample_size=512, scaling_factor=0.18215, **_VAE_BLOCKS),
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768),
        pad_token="<|endoftext|>",
        prediction_type="epsilon",
        image_encoder=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=224, patch_size=14, hidden_act="quick_gelu", projection_dim=768),
    ),
    "sd21": dict(
        unet=dict(sample_size=96, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                  layers_per_block=2, down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                  cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                  upcast_attention=True),
        vae=dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), latent_channels=4,
                 layers_per_block=2, sample_size=768, scaling_factor=0.18215, **_VAE_BLOCKS),
        text=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                  num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512),
        pad_token="!",
        prediction_type="v_prediction",
    ),
    "tiny": dict(
        unet=dict(sample_size=16, block_out_channels=(32, 32, 64, 64), layers_per_block=2, cross_attention_dim=32,
                  attention_head_dim=4, norm_num_groups=32, down_block_types=_SD_DOWN, up_block_types=_SD_UP),
        vae=dict(block_out_channels=(32, 32, 64, 64), latent_channels=4, layers_per_block=1, norm_num_groups=32,
                 sample_size=128, scaling_factor=0.18215, **_VAE_BLOCKS),
        text=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32),
        pad_token="<|endoftext|>",
        prediction_type="epsilon",
        image_encoder=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                           image_size=224, patch_size=32, hidden_act="quick_gelu", projection_dim=32),
    ),
}
ARCHITECTURES["tiny_sd21"] = dict(
    ARCHITECTURES["tiny"],
    unet=dict(ARCHITECTURES["tiny"]["unet"], attention_head_dim=(2, 2, 4, 4), use_linear_projection=True,
              upcast_attention=True),
    text=dict(ARCHITECTURES["tiny"]["text"], hidden_act="gelu"),
    pad_token="!",
    prediction_type="v_prediction",
)
