"""Dataset statistics for `python -m harness.data describe`: counts, categories, image sizes.

By default every sample is validated from its annotation and its image *headers*, which covers every
check except pixel decoding (missing files, modes, sizes, points, masks, regions) and takes seconds for
DragBench's 205 samples. `verify=True` also decodes every image, which catches truncated files.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from harness.data.base import DataError, Dataset, SampleInfo


def describe(dataset: Dataset, verify: bool = False) -> tuple[dict[str, Any], list[str]]:
    """(statistics, error messages) for the selected samples; errors do not stop the scan."""
    infos: list[SampleInfo] = []
    errors: list[str] = []
    for sample_id in dataset.sample_ids():
        try:
            infos.append(SampleInfo.of(dataset.load(sample_id)) if verify else dataset.inspect(sample_id))
        except DataError as exc:
            errors.append(str(exc))
    sizes = Counter(info.size for info in infos)
    drag = dataset.family == "drag"
    stats: dict[str, Any] = {
        "dataset": dataset.name,
        "root": dataset.loader.root,
        "family": dataset.family,
        "samples": len(infos),
        "pairs": sum(i.pairs or 0 for i in infos) if drag else None,
        "categories": dict(sorted(Counter(i.category for i in infos).items())),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))},
    }
    if drag:
        per_sample = Counter(2 * (i.pairs or 0) for i in infos)  # handles + targets, as the cards count them
        stats["points_per_sample"] = {str(k): per_sample[k] for k in sorted(per_sample)}
        dense = [i.dense_pairs for i in infos if i.dense_pairs is not None]
        if dense:
            stats["dense_pairs"] = sum(dense)
        with_gt = sum(i.ground_truth for i in infos)
        if with_gt:  # only formats that ship a ground truth (VFD-Bench) print it
            stats["with_ground_truth"] = with_gt
            stats["ground_truth_share"] = round(with_gt / len(infos), 4)
    stats["verified_pixels"] = verify
    return stats, errors
