"""Mean distance via DIFT point matching, under two protocols that must never be mixed.

`md_dift@dragdiffusion` (DragDiffusion `run_eval_point_matching.py`, protocols.md §2.1): native
resolution, DIFT in float32 with a VAE sample per ensemble copy, features bilinearly upsampled to H×W,
argmax of the cosine over the whole edited image, distance in pixels between integer (row, col) positions,
pooled over all points of all images (stored per sample with the point count as weight).

`md_dift@regiondrag` (RegionDrag `evaluator.py`, §2.3): images nearest-resized to 768×768, DIFT in
float16 with the latent mode, features nearest-upsampled to H×W, argmax restricted to the union of two
discs around handle and target (radius max(‖h − t‖/√2, 5)), distances divided by W and H per axis, mean
over points then over images; tables ×100.

`md_dift_masked@draglora` (DragLoRA's m-MD, protocols_2025.md §6.2): the `@dragdiffusion` features and
distances, with the argmax restricted to the pixels of the editable mask (`mask == 1` in DragBench's
`meta_data.pkl`; the sample's scoring `mask`), candidates in raster order. Pooled like MD.

`md_dift@inpaint4drag` (Inpaint4Drag `utils/evaluator.py`, §6.1b): RegionDrag's evaluator exactly, except
that `evaluation.py` passes no prompt, so the DIFT pass is conditioned on the empty prompt.

`features.source_cache: true` featurises source and edit one after the other and reuses the source's
features across methods and runs (harness/metrics/source_cache.py; opt-in, rounding-level change).

Seed policy: a generator seeded with `features.seed` (42) per sample; the source image is featurised
first and the edited image continues the same stream, as in the references. (The references seed once
per result folder (DragDiffusion, DragLoRA) or not at all (RegionDrag, Inpaint4Drag), so no seed
reproduces their per-image noise.)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from harness.metrics.base import Metric, MetricValue, weighted_mean
from harness.metrics.dift import DiftFeaturizer
from harness.metrics.lpips_alex import pil_resize_bilinear, to_unit_range
from harness.metrics.source_cache import featurize_pair
from harness.registry import METRICS
from harness.types import DragSample


def argmax_match_pixels(src_feat: torch.Tensor, trg_feat: torch.Tensor, handles_rc: torch.Tensor,
                        allowed: torch.Tensor | None = None) -> torch.Tensor:
    """(row, col) of the best cosine match in `trg_feat` for each handle's `src_feat` vector: over the whole
    image, or over the pixels where the H×W bool `allowed` is True (the first maximum in raster order)."""
    c, h, w = trg_feat.shape[1:]
    queries = F.normalize(src_feat[0, :, handles_rc[:, 0], handles_rc[:, 1]].float(), dim=0, eps=1e-8)  # C×N
    keys = F.normalize(trg_feat[0].float().reshape(c, -1), dim=0, eps=1e-8)
    sim = queries.t() @ keys
    if allowed is not None:
        sim = torch.where(allowed.reshape(1, -1), sim, torch.full_like(sim, -torch.inf))
    best = sim.argmax(dim=1)
    return torch.stack([best // w, best % w], dim=1)


def disc_union_mask(src: torch.Tensor, trg: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """RegionDrag's search region per pair: union of discs around handle and target, radius max(d/√2, 5)."""
    src, trg = src.float(), trg.float()
    radius = ((src - trg).norm(dim=1) / (2 ** 0.5)).clamp(min=5)
    ys, xs = torch.meshgrid(torch.arange(hw[0], device=src.device), torch.arange(hw[1], device=src.device), indexing="ij")
    d0 = ((xs - src[:, None, None, 0]) ** 2 + (ys - src[:, None, None, 1]) ** 2).sqrt()
    d1 = ((xs - trg[:, None, None, 0]) ** 2 + (ys - trg[:, None, None, 1]) ** 2).sqrt()
    return (d0 < radius[:, None, None]) | (d1 < radius[:, None, None])


def nearest_index(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """For each of `size_out` positions, the input position `F.interpolate(mode="nearest")` copies (taken
    from `F.interpolate` itself, so the rounding is exactly its own)."""
    positions = torch.arange(size_in, dtype=torch.float32, device=device)[None, None]
    return F.interpolate(positions, size=size_out, mode="nearest")[0, 0].long()


def nearest_upsampled_match_xy(src_feat: torch.Tensor, trg_feat: torch.Tensor, hw: tuple[int, int],
                               query_xy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RegionDrag's `nn_get_matches` on both features nearest-upsampled to `hw`, without building them:
    (x, y) of the best normalised dot-product match inside each query's mask.

    Nearest upsampling only repeats feature vectors, and normalising and dot products act per vector, so
    the similarity of a query to an upsampled position is its similarity to the low-resolution vector that
    position copies: computed on the (small) low-resolution grid and gathered through the index map. The
    full-size maps would be 2 × C × H × W (≈ 1 GB in fp16 at 512 × 768 with C = 1280) of memory traffic for
    no information. The first maximum in raster order wins, as in the upsampled argmax."""
    c, lh, lw = trg_feat.shape[1:]
    h, w = hw
    rows, cols = nearest_index(lh, h, trg_feat.device), nearest_index(lw, w, trg_feat.device)
    q = F.normalize(src_feat[0][:, rows[query_xy[:, 1]], cols[query_xy[:, 0]]], p=2, dim=0)
    keys = F.normalize(trg_feat, p=2, dim=1).reshape(c, lh * lw)
    sim = (q.t() @ keys).reshape(-1, lh, lw)[:, rows[:, None], cols[None, :]]
    sim = torch.where(mask, sim, torch.full_like(sim, -torch.inf))
    best = sim.reshape(len(q.t()), -1).argmax(dim=-1)
    return torch.stack([best % w, best // w], dim=1).float()


class _MdDift(Metric):
    families = ("drag",)
    dift_dtype = torch.float32
    compilable = False  # fixed input shape: `features.dift_compile` may compile its pass (one compilation)

    def featurizer(self) -> DiftFeaturizer:
        compiled = self.compilable and bool(self.context.features.get("dift_compile", False))
        key = ("dift", self.dift_dtype, compiled)
        cache = self.context._cache
        if key not in cache:
            models = self.context.dift_models(self.context.dtype(self.dift_dtype))
            cache[key] = DiftFeaturizer(models, compiled=compiled)
        return cache[key]

    def generator(self) -> torch.Generator:
        return torch.Generator(device=self.context.device).manual_seed(self.context.seed)

    def settings(self) -> dict[str, Any]:
        f = self.featurizer()
        out = {**f.models.describe(), "t": f.t, "up_ft_index": f.up_ft_index, "ensemble": f.ensemble,
               "seed_policy": f"per-sample generator seeded {self.context.seed}, source then edited"}
        return {**out, "compiled": "torch.compile (inductor): UNet trunk, VAE encoder"} if f.compiled else out


@METRICS.register("md_dift@dragdiffusion")
class MdDiftDragDiffusion(_MdDift):
    id = "md_dift@dragdiffusion"

    @classmethod
    def reduce(cls, values: np.ndarray, weights: np.ndarray, axis: int = -1) -> np.ndarray:
        """Pooled over all points of all images, as DragDiffusion's script: each image weighs its point count."""
        return weighted_mean(values, weights, axis)

    def search_region(self, sample: DragSample, device: torch.device) -> torch.Tensor | None:
        """Where the argmax may land: the whole image (None)."""
        return None

    def compute(self, sample: DragSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        dift = self.featurizer()
        m = dift.models
        edited = pil_resize_bilinear(edited, sample.size)
        h, w = sample.image.shape[:2]
        pair = torch.cat([to_unit_range(image, m.device, m.dtype) for image in (sample.image, edited)])
        low = featurize_pair(self, sample.image, sample.prompt, {"latent": "sample"},
                             lambda x, generator: dift(x, sample.prompt, "sample", generator), pair)
        feats = F.interpolate(torch.cat(low).float(), (h, w), mode="bilinear")
        feats = feats[:1], feats[1:]
        handles = torch.from_numpy(sample.handles.astype(np.int64)[:, ::-1].copy()).to(m.device)  # (row, col)
        targets = torch.from_numpy(sample.targets.astype(np.int64)[:, ::-1].copy()).to(m.device)
        matched = argmax_match_pixels(feats[0], feats[1], handles, self.search_region(sample, m.device))
        dist = (targets - matched).float().norm(dim=1)
        return MetricValue(float(dist.mean()), weight=float(len(dist)), info={"distances": dist.tolist()})


@METRICS.register("md_dift_masked@draglora")
class MdDiftMaskedDragLoRA(MdDiftDragDiffusion):
    id = "md_dift_masked@draglora"
    inputs = ("mask",)

    def search_region(self, sample: DragSample, device: torch.device) -> torch.Tensor | None:
        """DragLoRA's `candidate_coords[mask_flat == 1]`: the editable mask (never empty: loaders refuse that)."""
        return torch.from_numpy(np.ascontiguousarray(sample.mask)).to(device)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "search": "argmax restricted to the editable mask (m-MD)"}


@METRICS.register("md_dift@regiondrag")
class MdDiftRegionDrag(_MdDift):
    id = "md_dift@regiondrag"
    dift_dtype = torch.float16
    compilable = True
    table_scale = 100.0
    resolution = 768

    def prompt(self, sample: DragSample) -> str:
        return sample.prompt

    def compute(self, sample: DragSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        dift = self.featurizer()
        m = dift.models
        prompt = self.prompt(sample)

        def featurize(pair: torch.Tensor) -> torch.Tensor:
            return torch.cat(featurize_pair(self, sample.image, prompt, {"latent": "mode", "resolution": self.resolution},
                                            lambda x, generator: dift(x, prompt, "mode", generator), pair))

        return regiondrag_distance(sample, edited, m.device, m.dtype, self.resolution, featurize)


def regiondrag_distance(sample: DragSample, edited: np.ndarray, device: torch.device, dtype: torch.dtype,
                        resolution: int, featurize: Callable[[torch.Tensor], torch.Tensor]) -> MetricValue:
    """RegionDrag's `DragEvaluator.compute_distance` around a feature network: `featurize` maps the (2, 3, S, S)
    [−1, 1] source/edit pair, nearest-resized to `resolution`², to (2, C, h, w) feature maps (DIFT or DINOv2)."""
    h, w = sample.image.shape[:2]
    src_kps = torch.from_numpy(sample.handles.astype(np.int64)).to(device)
    trg_kps = torch.from_numpy(sample.targets.astype(np.int64)).to(device)
    if edited.shape != sample.image.shape:
        eh, ew = edited.shape[:2]
        edited = cv2.resize(edited, (w, h))
        trg_kps = (trg_kps * torch.tensor([w, h], device=device) / torch.tensor([ew, eh], device=device)).long()
    pair = torch.cat([to_unit_range(image, device, dtype) for image in (sample.image, edited)])
    low = featurize(F.interpolate(pair, size=(resolution, resolution)))
    mask = disc_union_mask(src_kps, trg_kps, (h, w))
    pred = nearest_upsampled_match_xy(low[:1], low[1:], (h, w), src_kps, mask)
    d = trg_kps.float() - pred
    d[:, 0] /= w
    d[:, 1] /= h
    dist = d.norm(dim=-1)
    return MetricValue(float(dist.mean()), info={"distances": dist.tolist()})


@METRICS.register("md_dift@inpaint4drag")
class MdDiftInpaint4Drag(MdDiftRegionDrag):
    id = "md_dift@inpaint4drag"

    def prompt(self, sample: DragSample) -> str:
        """Inpaint4Drag's `evaluation.py` calls `compute_distance` without a prompt: DIFT sees ""."""
        return ""

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "prompt": "empty (Inpaint4Drag evaluation.py passes none)"}
