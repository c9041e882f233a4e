"""The dataset-loader contract and the options every dataset shares.

A loader lists its sample ids cheaply (`list_ids`) and loads one sample on demand (`load_sample`), so a
resumed run never decodes images it does not need. `Dataset` wraps a loader with the shared options:
category and id filters, deterministic round-robin sharding of the sorted ids, and point-percentage
subsampling of dense point pairs (RegionDrag's ablation knob).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, Sequence

from harness.regions import subsample_pairs
from harness.types import DragSample, Family, Sample


class DataError(ValueError):
    """Invalid dataset content; the message names the file and the field."""


class DatasetLoader:
    name: ClassVar[str] = ""
    family: ClassVar[Family] = "drag"

    def __init__(self, root: str | None = None, **options: Any) -> None:
        self.root = root
        self.options = options

    def list_ids(self) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def load_sample(self, sample_id: str) -> Sample:  # pragma: no cover - interface
        raise NotImplementedError

    def fingerprint(self, sample_id: str) -> str:
        """A content hash of the sample's files (for run.json); loaders override with file hashes."""
        return ""


@dataclass
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard.index must be in [0, shard.count), got index={self.index} count={self.count}")

    def select(self, sample_ids: Sequence[str]) -> list[str]:
        """Round-robin over the sorted, filtered ids: deterministic on every machine, balanced to within one
        sample (a hash of the id can leave a shard empty on a small set). Every shard of a sweep must use
        the same dataset filters, which is the case when they come from one multirun command."""
        return list(sample_ids[self.index :: self.count])


@dataclass
class Dataset:
    loader: DatasetLoader
    categories: Sequence[str] = ()
    ids: Sequence[str] = ()
    limit: int | None = None
    shard: Shard = field(default_factory=Shard)
    point_fraction: float = 1.0
    point_seed: int = 0

    @property
    def name(self) -> str:
        return self.loader.name

    @property
    def family(self) -> Family:
        return self.loader.family

    @property
    def key(self) -> str:
        """The dataset's folder in the run store and its name in score rows: the dataset name, plus the
        options that change the samples themselves (point subsampling), so that the variants of an
        ablation never share or overwrite outputs. Filters and shards select samples without changing
        them, so they stay out of the key and every shard writes into the same folder."""
        if self.point_fraction >= 1.0:
            return self.name
        return f"{self.name}@pf{self.point_fraction:g}-ps{self.point_seed}"

    def sample_ids(self) -> list[str]:
        ids = sorted(self.loader.list_ids())
        if self.categories:
            wanted = set(self.categories)
            ids = [i for i in ids if i.split("/")[1] in wanted]
        if self.ids:
            wanted = set(self.ids)
            ids = [i for i in ids if i in wanted or i.split("/", 1)[1] in wanted]
        if self.limit is not None:
            ids = ids[: self.limit]
        return self.shard.select(ids)

    def load(self, sample_id: str) -> Sample:
        sample = self.loader.load_sample(sample_id)
        if self.point_fraction < 1.0 and isinstance(sample, DragSample) and sample.dense_handles is not None:
            seed = self.point_seed + zlib.crc32(sample_id.encode())
            h, t = subsample_pairs(sample.dense_handles, sample.dense_targets, self.point_fraction, seed)
            sample = sample.replace(dense_handles=h, dense_targets=t)
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for sample_id in self.sample_ids():
            yield self.load(sample_id)


def open_dataset(cfg: Mapping[str, Any], shard: Mapping[str, Any] | None = None) -> Dataset:
    """Build a `Dataset` from a `dataset` config node (`name`, `root`, filters, loader options)."""
    from harness.registry import DATASETS

    cfg = dict(cfg)
    name = cfg.pop("name")
    common = {k: cfg.pop(k) for k in ("categories", "ids", "limit", "point_fraction", "point_seed") if k in cfg}
    root = cfg.pop("root", None)
    loader = DATASETS.get(name)(root=root, **cfg)
    common["categories"] = list(common.get("categories") or [])
    common["ids"] = list(common.get("ids") or [])
    return Dataset(loader=loader, shard=Shard(**dict(shard or {})), **common)
