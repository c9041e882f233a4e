"""The order samples are edited in: grouped by image size, then by id, and cut into equal-size batches."""
from __future__ import annotations

from typing import Mapping

from harness.data.base import Dataset


def sample_sizes(dataset: Dataset, sample_ids: list[str]) -> dict[str, tuple[int, int] | None]:
    """(height, width) of each sample from `inspect` (headers, no decoding); None where the header cannot
    be read (loading it then records the error)."""
    sizes: dict[str, tuple[int, int] | None] = {}
    for sample_id in sample_ids:
        try:
            width, height = dataset.loader.inspect(sample_id).size
            sizes[sample_id] = (height, width)
        except Exception:
            sizes[sample_id] = None
    return sizes


def edit_order(dataset: Dataset, sample_ids: list[str],
               sizes: Mapping[str, tuple[int, int] | None] | None = None) -> list[str]:
    """The samples grouped by image size, then by id. Methods that build work per input shape (RegionDrag's
    CUDA graphs, cuDNN plans) then build it once per size rather than at every size change: DragBench-D
    has 53 heights in sorted-id order. A sample of unknown size goes last."""
    sizes = sample_sizes(dataset, sample_ids) if sizes is None else sizes

    def key(sample_id: str) -> tuple:
        size = sizes[sample_id]
        return (1, 0, 0, sample_id) if size is None else (0, *size, sample_id)

    return sorted(sample_ids, key=key)


def size_batches(order: list[str], sizes: Mapping[str, tuple[int, int] | None], limit: int) -> list[list[str]]:
    """`order` cut into runs of equal (known) size of at most `limit` samples; unknown sizes go alone."""
    batches: list[list[str]] = []
    for sample_id in order:
        last = batches[-1] if batches else None
        if (last is not None and len(last) < limit and sizes[sample_id] is not None
                and sizes[last[0]] == sizes[sample_id]):
            last.append(sample_id)
        else:
            batches.append([sample_id])
    return batches
