"""Metrics against a ground-truth image (`DragSample.ground_truth`), under two protocols.

`@vfd` — VFD-Bench (FlowDrag, protocols_2025.md §6.5). **Reconstructed, unverified**: FlowDrag never
released its metric script; only CSV headers survive (`psnr_gt`, `cur_1-lpips_gt`, `cur_clip_sim_gt`). The
reconstruction follows the paper's wording and the DragDiffusion family (§6.1a) its code descends from:
- `psnr_gt@vfd`: PSNR(edit, gt) on uint8 images at the source size (512²), MAX = 255, MSE over all pixels
  and channels in float64; per-image values, mean over images. Identical images are undefined (infinite PSNR).
- `lpips_alex_gt@vfd`: LPIPS AlexNet v0.1 as §6.1a (edit PIL-bilinear to the source size, [−1, 1],
  bilinear 224², float32) between gt and edit; `if_gt@vfd` = 1 − LPIPS, as the paper prints it.
- `clip_gt@vfd`: cosine of CLIP ViT-B/32 image embeddings (`clip` package preprocess) of gt and edit.

`@draglora` — DragLoRA's Drag-Back (§6.2, `drag_bench_evaluation/run_eval_similarity.py`): the second leg's
sample carries the original image as its ground truth (harness/drag_back.py), and the round trip is scored as
that script scores a dragged image: the edit PIL-bilinear resized to the original's size, then
- `lpips_alex_gt@draglora` / `if_gt@draglora`: LPIPS AlexNet as above (the paper reports 1 − LPIPS);
- `clip_gt@draglora`: CLIP ViT-B/32 cosine, as above;
- `mse_gt@draglora`: `nn.MSELoss` on the full-resolution [−1, 1] float32 tensors.
The computations coincide with the `@vfd` ones where both define a quantity; the ids differ because the
protocols are different claims (a reconstruction vs. released code) and must not share a table column.

A sample without a ground truth is undefined for every metric here (excluded from means, counted as such).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.metrics.base import Metric, MetricValue
from harness.metrics.clip_vit import shared_clip_vit_b32
from harness.metrics.lpips_alex import _LpipsAlex, pil_resize_bilinear, to_unit_range
from harness.registry import METRICS
from harness.types import DragSample

NO_TRUTH = "the sample has no ground-truth image"


def undefined(reason: str) -> MetricValue:
    return MetricValue(float("nan"), info={"nan": reason})


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of equal shape, MAX = 255 (infinite when they are identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


class _GroundTruthMetric(Metric):
    """Scores the edit against `sample.ground_truth`; the edit is first PIL-bilinear resized to its size."""

    families = ("drag",)
    inputs = ("ground_truth",)

    def compute(self, sample: DragSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        if sample.ground_truth is None:
            return undefined(NO_TRUTH)
        return self.against(sample.ground_truth, pil_resize_bilinear(edited, sample.size))

    def against(self, truth: np.ndarray, edited: np.ndarray) -> MetricValue:  # pragma: no cover - interface
        raise NotImplementedError


class _Psnr(_GroundTruthMetric):
    higher_is_better = True

    def against(self, truth: np.ndarray, edited: np.ndarray) -> MetricValue:
        value = psnr_uint8(truth, edited)
        return undefined("edit equals the ground truth: PSNR is infinite") if math.isinf(value) else MetricValue(value)

    def settings(self) -> dict[str, Any]:
        return {"input": "uint8 at the source size (edit PIL-bilinear to it)", "max": 255, "mse": "float64, all pixels and channels"}


class _Lpips(_GroundTruthMetric, _LpipsAlex):
    """`_LpipsAlex`'s network and settings (§6.1a), on the (ground truth, edit) pair."""

    one_minus: ClassVar[bool] = False

    def against(self, truth: np.ndarray, edited: np.ndarray) -> MetricValue:
        dtype = self.context.dtype(self.dtype)
        model, _ = self.context.lpips_alex(dtype)
        a = F.interpolate(to_unit_range(truth, self.context.device, dtype), (224, 224), mode="bilinear")
        b = F.interpolate(to_unit_range(edited, self.context.device, dtype), (224, 224), mode="bilinear")
        with torch.no_grad():
            value = float(model(a, b).float().item())
        return MetricValue(1.0 - value if self.one_minus else value)


class _Clip(_GroundTruthMetric):
    higher_is_better = True

    def against(self, truth: np.ndarray, edited: np.ndarray) -> MetricValue:
        clip = shared_clip_vit_b32(self.context)
        batch = torch.stack([clip.transform(Image.fromarray(image)) for image in (truth, edited)])
        with torch.no_grad():
            emb = clip.embed(batch).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return MetricValue(float((emb[0] * emb[1]).sum()))

    def settings(self) -> dict[str, Any]:
        clip = shared_clip_vit_b32(self.context)
        return {**clip.describe(), "preprocess": clip.preprocess, "similarity": "cosine of L2-normalised image embeddings"}


class _Mse(_GroundTruthMetric):
    def against(self, truth: np.ndarray, edited: np.ndarray) -> MetricValue:
        a = torch.from_numpy(truth.astype(np.float32)) / 127.5 - 1
        b = torch.from_numpy(edited.astype(np.float32)) / 127.5 - 1
        return MetricValue(float(torch.nn.functional.mse_loss(a, b)))

    def settings(self) -> dict[str, Any]:
        return {"input": "[-1,1] float32 at full resolution (edit PIL-bilinear to the source size)", "loss": "nn.MSELoss (mean)"}


def _register(metric_id: str, base: type, **attrs: Any) -> None:
    METRICS.register(metric_id)(type(metric_id, (base,), {"id": metric_id, **attrs}))


for _protocol in ("vfd", "draglora"):
    _register(f"lpips_alex_gt@{_protocol}", _Lpips)
    _register(f"if_gt@{_protocol}", _Lpips, one_minus=True, higher_is_better=True)
    _register(f"clip_gt@{_protocol}", _Clip)
_register("psnr_gt@vfd", _Psnr)
_register("mse_gt@draglora", _Mse)
