"""The PIE-Bench metric suite (PnPInversion `evaluation/evaluate.py` + `matrics_calculator.py` @07f97f4;
protocols.md §4.2). Ids are `pie_` + the reference CSV column. Values are raw; reports apply the table
scales (structure distance and LPIPS ×10³, MSE ×10⁴, SSIM ×10²; CLIP scores are already ×100).

Inputs as the evaluator sees them: the source image and the edited 512×512 image, uint8, and the sample's
edit mask (1 = edited region; the PIE-Bench loader already forces the 1-pixel border to 1).

- `pie_structure_distance`: DINO ViT-B/8; both images as float **0–255** (the reference never divides by
  255 — reproduced, named `input_scale` in the settings), torchvision `Resize(224, max_size=480)`
  (bilinear, antialias), ImageNet mean/std; keys of the last layer (CLS included, heads concatenated),
  cosine self-similarity matrix; MSE between the two matrices. Whole image.
- `pie_{psnr,lpips,mse,ssim}_{unedit,edit}_part`: both images /255 and multiplied by (1 − mask) (unedited
  part) or by the mask (edited part) over the full image, then torchmetrics PSNR (data_range 1), SqueezeNet
  LPIPS on ×2 − 1, MSE over all C×H×W values, SSIM (data_range 1, Gaussian 11, σ 1.5).
- `pie_clip_similarity_*`: CLIPScore = max(100·cos, 0) of CLIP ViT-L/14 image and text embeddings, as
  torchmetrics' `CLIPScore` computes it (the harness computes it itself: torchmetrics 1.9 fails with
  transformers 5, models.md §2.5). Text: the prompt with `[ ]` removed, tokenised without truncation and
  cut to 77 tokens (torchmetrics' rule). Image: the uint8 image through the PIL CLIP processor;
  `…_edit_part` first multiplies it by the mask (black background, no crop).

Undefined values are NaN, as the reference writes "nan": the unedited-part metrics when the mask is full,
the edited-part metrics and the edited CLIP score when it is empty. The report excludes them from means and
counts them.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from harness.metrics import pie_networks
from harness.metrics.base import Metric, MetricValue
from harness.registry import METRICS
from harness.types import PromptEditSample

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sample_mask(sample: PromptEditSample) -> np.ndarray:
    if sample.mask is None:
        raise ValueError(f"{sample.sample_id}: field 'mask' is missing; PIE-Bench region metrics need the edit mask")
    if sample.mask.shape != sample.image.shape[:2]:
        raise ValueError(f"{sample.sample_id}: field 'mask' is {sample.mask.shape}, the image {sample.image.shape[:2]}")
    return sample.mask


def masked_unit(image: np.ndarray, keep: np.ndarray | None) -> torch.Tensor:
    """uint8 H×W×3 → float32 (1, 3, H, W) in [0, 1], zero where `keep` is False (the reference's
    `img / 255 * mask`)."""
    x = image.astype(np.float32) / 255
    if keep is not None:
        x = x * keep.astype(np.float32)[:, :, None]
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()


def dino_key_self_similarity(model, image: np.ndarray, device: torch.device) -> torch.Tensor:
    """Cosine self-similarity (tokens × tokens) of the last layer's keys for one uint8 image, with the
    reference's 0–255 input scale."""
    from torchvision.transforms import functional as TF

    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).to(device)  # 0–255: the reference quirk
    x = TF.resize(x, 224, max_size=480, antialias=True)
    x = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)[None]
    captured = []
    handle = pie_networks.last_layer_key_projection(model).register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            model(pixel_values=x, interpolate_pos_encoding=True)
    finally:
        handle.remove()
    keys = captured[0][0].float()  # (tokens, hidden): heads concatenated, as DINO's qkv split gives them
    norms = keys.norm(dim=1, keepdim=True)
    return (keys @ keys.t()) / (norms @ norms.t()).clamp(min=1e-8)


def clip_score(context, image: np.ndarray, text: str) -> float:
    """max(100·cos(image, text), 0) with CLIP ViT-L/14 (torchmetrics' CLIPScore for one pair)."""
    model, tokenizer, processor, _ = pie_networks.clip(context)
    limit = model.config.text_config.max_position_embeddings
    tokens = tokenizer(text, padding=True, return_tensors="pt")
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"][:, :limit].to(context.device),
                    attention_mask=tokens["attention_mask"][:, :limit].to(context.device),
                    pixel_values=pixels.to(context.device))
    image_embeds = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    text_embeds = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    return max(100 * float((image_embeds * text_embeds).sum()), 0.0)


class PieMetric(Metric):
    families = ("prompt",)


def _nan(reason: str) -> MetricValue:
    return MetricValue(float("nan"), info={"nan": reason})


class RegionMetric(PieMetric):
    """A full-image metric on images multiplied by the unedited part (1 − mask) or the edited part (mask)."""

    part: ClassVar[str] = "unedit"
    inputs = ("mask",)

    def keep(self, sample: PromptEditSample) -> np.ndarray | MetricValue:
        mask = sample_mask(sample)
        if self.part == "unedit":
            return _nan("mask is full: no unedited part") if mask.all() else ~mask
        return _nan("mask is empty: no edited part") if not mask.any() else mask

    def compute(self, sample: PromptEditSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        keep = self.keep(sample)
        if isinstance(keep, MetricValue):
            return keep
        a = masked_unit(sample.image, keep).to(self.context.device)
        b = masked_unit(edited, keep).to(self.context.device)
        return MetricValue(self.value(a, b))

    def value(self, source: torch.Tensor, edited: torch.Tensor) -> float:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"region": "images ×(1 − mask)" if self.part == "unedit" else "images ×mask",
                "input": "uint8/255, full image, masked pixels zero", "dtype": "float32"}


class Psnr(RegionMetric):
    higher_is_better = True

    def value(self, source, edited):
        from torchmetrics.functional.image import peak_signal_noise_ratio

        return float(peak_signal_noise_ratio(source, edited, data_range=1.0))


class Mse(RegionMetric):
    table_scale = 1e4

    def value(self, source, edited):
        from torchmetrics.functional.regression import mean_squared_error

        return float(mean_squared_error(source[0], edited[0]))


class Ssim(RegionMetric):
    higher_is_better = True
    table_scale = 1e2

    def value(self, source, edited):
        from torchmetrics.functional.image import structural_similarity_index_measure

        return float(structural_similarity_index_measure(source, edited, data_range=1.0))


class Lpips(RegionMetric):
    table_scale = 1e3

    def value(self, source, edited):
        model, _ = pie_networks.lpips_squeeze(self.context)
        with torch.no_grad():
            return float(model(source * 2 - 1, edited * 2 - 1).item())

    def settings(self):
        return super().settings() | {"network": pie_networks.lpips_squeeze(self.context)[1], "input": "×2 − 1 of the masked /255 images"}


def _register(cls: type[PieMetric], metric_id: str, **attrs: Any) -> None:
    METRICS.register(metric_id)(type(metric_id, (cls,), {"id": metric_id, **attrs}))


for _part in ("unedit", "edit"):
    _register(Psnr, f"pie_psnr_{_part}_part", part=_part)
    _register(Lpips, f"pie_lpips_{_part}_part", part=_part)
    _register(Mse, f"pie_mse_{_part}_part", part=_part)
    _register(Ssim, f"pie_ssim_{_part}_part", part=_part)


@METRICS.register("pie_structure_distance")
class StructureDistance(PieMetric):
    id = "pie_structure_distance"
    table_scale = 1e3

    def compute(self, sample, edited, record):
        model, _ = pie_networks.dino(self.context)
        device = self.context.device
        source_sim = dino_key_self_similarity(model, sample.image, device)
        edited_sim = dino_key_self_similarity(model, edited, device)
        return MetricValue(float(F.mse_loss(edited_sim, source_sim)))

    def settings(self):
        return {"network": pie_networks.dino(self.context)[1], "features": "last-layer keys, cosine self-similarity",
                "input_scale": "0-255 (reference quirk: ImageNet normalisation applied to unscaled pixels)",
                "resize": "torchvision Resize(224, max_size=480) bilinear antialias", "dtype": "float32"}


class ClipSimilarity(PieMetric):
    higher_is_better = True
    image: ClassVar[str] = "edited"  # edited | edited_mask | source

    def compute(self, sample, edited, record):
        if self.image == "source":
            return MetricValue(clip_score(self.context, sample.image, sample.encode_source_prompt))
        if self.image == "edited_mask":
            mask = sample_mask(sample)
            if not mask.any():
                return _nan("mask is empty: no edited part")
            edited = edited * mask[:, :, None].astype(np.uint8)
        return MetricValue(clip_score(self.context, edited, sample.encode_target_prompt))

    def settings(self):
        return {"network": pie_networks.clip(self.context)[3], "score": "max(100*cos, 0)",
                "image": {"edited": "edited image", "edited_mask": "edited image × mask, no crop",
                          "source": "source image"}[self.image],
                "text": "source prompt" if self.image == "source" else "target prompt",
                "preprocess": "CLIPImageProcessorPil (shorter side 224 bicubic, centre crop 224); text cut to 77 tokens",
                "dtype": "float32"}


_register(ClipSimilarity, "pie_clip_similarity_target_image", image="edited", inputs=("target_prompt",))
_register(ClipSimilarity, "pie_clip_similarity_target_image_edit_part", image="edited_mask",
          inputs=("mask", "target_prompt"))
_register(ClipSimilarity, "pie_clip_similarity_source_image", image="source", uses_output=False, higher_is_better=False,
          inputs=("prompt",))
