"""Set-level Fréchet distances of the Paint-by-Example COCOEE protocol (protocols.md §5, §7 item 16).

- `fid@pbe` — **as released**. Paint-by-Example's `eval_tool/fid/fid_score.py` @52a7e37 is a pytorch-fid
  fork whose `InceptionV3.forward` was replaced by `clip_model.encode_image` (`eval_tool/fid/inception.py`;
  its dataset applies the `clip` package's ViT-B/32 `preprocess`). So the published "FID" is the Fréchet
  distance between **CLIP ViT-B/32 image embeddings** (512-d, fp16 on the GPU), not Inception pool3
  features. The Inception weights are still downloaded by that script, and never used.
- `fid_inception@pbe` — the standard FID (pytorch-fid's InceptionV3 pool3, 2048-d, bilinear 299, float32)
  on the same reference set and outputs: what the label "FID" means elsewhere. It is a different metric;
  never compare it with `fid@pbe`.

Reference set (`features.fid_reference`): the published protocol compares the 3,500 results with **all COCO
2017 test images**, resized to 512 on the short side and centre-cropped to 512, saved as PNG
(`prepare_reference`, = `scripts/create_square_gt_for_fid.py`); its statistics are cached once per
(files, network, preprocessing). Left empty, the reference is the set's own source images (not the
published protocol; the settings say so). Results are the full decoded images (no paste-back).

Images are embedded in batches of `features.fid_batch_size` (50, pytorch-fid's default; the features do
not depend on it beyond float rounding). Two folders can be compared directly: `python -m harness.metrics compute fid@pbe --source REF_DIR --edited DIR`
(`--source` is the reference set, as the first path of `fid_score.py`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.metrics.base import MetricValue, SetMetric
from harness.metrics.clip_vit import ClipImageEmbedding, shared_clip_vit_b32
from harness.metrics.frechet import (FeatureExtractor, FolderStats, embed_arrays, folder_statistics, frechet_distance,
                                     statistics)
from harness.metrics.inception import InceptionPool3
from harness.registry import METRICS
from harness.types import Sample


class FrechetMetric(SetMetric):
    """Per sample: the embedding of the output (and of the source when the reference is the sources);
    per set: the Fréchet distance to the reference statistics."""

    families = ("exemplar",)
    network_option: ClassVar[str] = ""  # the features key naming the network (the metric CLI's `weights_path`)

    def extractor(self) -> FeatureExtractor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        return int(self.context.features.get("fid_batch_size", 50))

    @property
    def reference(self) -> str | None:
        return self.context.features.get("fid_reference") or None

    def features(self, sample: Sample, edited: np.ndarray) -> np.ndarray:
        images = [edited] if self.reference else [edited, sample.image]
        return embed_arrays(self.extractor(), images, self.batch_size)

    def reference_statistics(self, folder: str, num_workers: int | None = None) -> FolderStats:
        return self.context.shared(("frechet_reference", self.id, folder),
                                   lambda: folder_statistics(folder, self.extractor(), self.batch_size, num_workers))

    def aggregate(self, features: list[np.ndarray]) -> MetricValue:
        stacked = np.stack(features)  # (images, 1 or 2, dims)
        edited = statistics(stacked[:, 0], f"{self.id} edited set")
        if self.reference:
            reference = self.reference_statistics(self.reference)
            value = frechet_distance(edited, reference.stats)
            return MetricValue(value, weight=edited.n, info={"images": edited.n, "reference": reference.describe()})
        value = frechet_distance(edited, statistics(stacked[:, 1], f"{self.id} source set"))
        return MetricValue(value, weight=edited.n, info={"images": edited.n, "reference": "sources"})

    def compare_folders(self, reference: str | Path, edited: str | Path, num_workers: int | None = None) -> dict[str, Any]:
        """Fréchet distance of the images in `edited` to those in `reference` (statistics of both cached)."""
        a = self.reference_statistics(str(reference), num_workers)
        b = folder_statistics(edited, self.extractor(), self.batch_size, num_workers)
        return {"value": frechet_distance(b.stats, a.stats), "reference": a.describe(), "edited": b.describe()}

    def settings(self) -> dict[str, Any]:
        settings = dict(self.extractor().describe())
        if self.reference:
            settings["reference"] = self.reference_statistics(self.reference).describe()
        else:
            settings["reference"] = "sources (the set's own source images; the published protocol uses COCO 2017 test)"
        return settings


@METRICS.register("fid@pbe")
class FidPbe(FrechetMetric):
    """Fréchet distance of CLIP ViT-B/32 image embeddings, as Paint-by-Example's released `fid_score.py`."""

    id = "fid@pbe"
    network_option = "clip_vit_b32"

    def extractor(self) -> ClipImageEmbedding:
        return shared_clip_vit_b32(self.context)


@METRICS.register("fid_inception@pbe")
class FidInceptionPbe(FrechetMetric):
    """Standard FID (pytorch-fid InceptionV3 pool3) on Paint-by-Example's reference set and outputs."""

    id = "fid_inception@pbe"
    network_option = "inception_weights"

    def extractor(self) -> InceptionPool3:
        weights = str(self.context.features.get("inception_weights", "standard"))
        return self.context.shared(("fid_inception", weights), lambda: InceptionPool3(
            weights, self.context.device, self.context.seed))


def prepare_reference(source: str | Path, target: str | Path) -> int:
    """Paint-by-Example's `scripts/create_square_gt_for_fid.py`: every file of `source` (COCO 2017 test)
    → torchvision Resize(512) (bilinear, short side) + CenterCrop(512) → `<stem>.png` in `target`.
    Returns the number of images written."""
    from PIL import Image
    from torchvision import transforms as T

    transform = T.Compose([T.Resize(512), T.CenterCrop(512)])
    source, target = Path(source), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in source.iterdir() if p.is_file())
    for path in files:
        with Image.open(path) as image:
            transform(image).save(target / f"{path.stem}.png")
    return len(files)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "prepare-reference":
        sys.exit("usage: python -m harness.metrics.fid prepare-reference COCO_TEST2017_DIR OUT_DIR")
    print(f"wrote {prepare_reference(sys.argv[2], sys.argv[3])} images to {sys.argv[3]}")
