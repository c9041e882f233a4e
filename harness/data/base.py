"""The dataset-loader contract and the options every dataset shares.

A loader lists its sample ids cheaply (`list_ids`), describes one sample from headers and annotations
(`inspect`, used by `python -m harness.data describe`) and loads one sample on demand (`load_sample`), so
a resumed run never decodes images it does not need. Sample ids are `<dataset>/<category>/<name>`.
`Dataset` wraps a loader with the shared options: category and id filters (ids inline or from a file),
deterministic round-robin sharding of the sorted ids, and point-percentage subsampling of dense point pairs (RegionDrag's
ablation knob).
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

from harness.regions import kept_pair_count, subsample_pairs
from harness.store import InvalidSampleId, sample_relpath
from harness.types import DragSample, Family, Sample

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Invalid dataset content; the message names the file and the field."""


@dataclass(frozen=True)
class SampleInfo:
    """What `describe` counts for one sample, obtained without decoding the source image."""

    sample_id: str
    category: str
    size: tuple[int, int]  # (width, height) of the source image
    pairs: int | None = None  # sparse handle→target pairs (drag samples)
    dense_pairs: int | None = None  # dense pairs from regions (drag samples with regions)
    ground_truth: bool = False  # the sample carries a ground-truth result image (VFD-Bench)

    @classmethod
    def of(cls, sample: Sample) -> "SampleInfo":
        if isinstance(sample, DragSample):
            dense = None if sample.dense_handles is None else len(sample.dense_handles)
            return cls(sample.sample_id, sample.category, sample.size, len(sample.handles), dense,
                       sample.ground_truth is not None)
        return cls(sample.sample_id, sample.category, sample.size)


UNSET_ROOTS = (None, "", "???")
SHARED_OPTIONS = ("categories", "ids", "ids_file", "limit", "point_fraction", "point_seed")


class DatasetLoader:
    """One on-disk format. Subclasses declare their options (with defaults) in `option_defaults`."""

    name: ClassVar[str] = ""
    family: ClassVar[Family] = "drag"
    option_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, root: str | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            valid = ", ".join(sorted(self.option_defaults)) or "none"
            raise DataError(f"dataset {self.name!r}: unknown option(s) {unknown}; valid options: {valid}")
        self.root = None if root in UNSET_ROOTS else str(root)
        # Resolved once, here: every file path a loader builds starts from this absolute root, so a relative
        # root (`../shared/data/dragbench-d`, `~/data`) means what it meant in the directory the run started
        # in, and no path is ever joined onto a root it already contains (`resolve_inside`).
        self.root_path = None if self.root is None else Path(self.root).expanduser().resolve()
        self.options = {**self.option_defaults, **options}

    def check_choice(self, option: str, choices: Iterable[str]) -> None:
        """Refuse an option value outside `choices`, naming the dataset, the option and the valid values."""
        if self.options[option] not in choices:
            raise DataError(f"dataset {self.name!r}: {option} must be one of {list(choices)}, "
                            f"got {self.options[option]!r}")

    @property
    def root_dir(self) -> Path:
        """The dataset root, checked to exist (file-backed loaders only)."""
        path = self.root_path
        if path is None:
            raise DataError(f"dataset {self.name!r}: no root given (set dataset.root=/path/to/{self.name}, "
                            "or --root with `python -m harness.data describe`)")
        if not path.is_dir():
            raise DataError(f"dataset {self.name!r}: root {self.root} is not a directory"
                            + (f" ({path})" if str(path) != self.root else ""))
        return path

    def list_ids(self) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def load_sample(self, sample_id: str) -> Sample:  # pragma: no cover - interface
        raise NotImplementedError

    def inspect(self, sample_id: str) -> SampleInfo:
        """Validate one sample and report its counts; loaders override to skip decoding the source image."""
        return SampleInfo.of(self.load_sample(sample_id))

    def fingerprint(self, sample_id: str) -> str:
        """A content hash of the sample's files (for run.json); loaders override with file hashes."""
        return ""

    def split_id(self, sample_id: str) -> tuple[str, str]:
        """`<dataset>/<category>/<name>` → (category, name), refusing ids of another dataset."""
        parts = sample_id.split("/")
        if len(parts) != 3 or parts[0] != self.name or not all(parts) or any(p in (".", "..") for p in parts):
            raise DataError(f"dataset {self.name!r}: invalid sample id {sample_id!r} "
                            f"(expected {self.name}/<category>/<name>)")
        return parts[1], parts[2]


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
    ids_file: str | None = None
    limit: int | None = None
    shard: Shard = field(default_factory=Shard)
    point_fraction: float = 1.0
    point_seed: int = 0
    refused_ids: dict[str, str] = field(default_factory=dict)  # id → why it was left out

    def __post_init__(self) -> None:
        if not 0 < self.point_fraction <= 1:
            raise DataError(f"dataset.point_fraction must be in (0, 1], got {self.point_fraction}")

    @property
    def name(self) -> str:
        return self.loader.name

    @property
    def family(self) -> Family:
        return self.loader.family

    def wanted_ids(self) -> list[str]:
        """The ids named by `ids` and `ids_file` (one per line; blank lines and `#` comments skipped).

        Each may be a full id, `<category>/<name>`, or a bare `<name>` that only one category has."""
        wanted = [str(i) for i in self.ids]
        if self.ids_file:
            path = Path(self.ids_file).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise DataError(f"{path}: cannot read the sample id list (dataset.ids_file): {exc}") from None
            wanted += [line.split("#", 1)[0].strip() for line in lines]
        return [w for w in wanted if w]

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
        """The selected ids in a deterministic (sorted) order; unknown categories or ids are errors, so a
        typo in a filter never yields a silently smaller run."""
        ids = sorted(i for i in self.loader.list_ids() if self._storable(i))
        if self.categories:
            present = Counter(i.split("/")[1] for i in ids)
            unknown = [c for c in self.categories if c not in present]
            if unknown:
                raise DataError(f"dataset {self.name!r}: unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                                f"{unknown}; categories: {', '.join(sorted(present))}")
            wanted = set(self.categories)
            ids = [i for i in ids if i.split("/")[1] in wanted]
        wanted_ids = self.wanted_ids()
        if wanted_ids:
            chosen = self._resolve(ids, wanted_ids)
            ids = [i for i in ids if i in chosen]
        if self.limit is not None:
            ids = ids[: self.limit]
        return self.shard.select(ids)

    def _resolve(self, ids: list[str], wanted: list[str]) -> set[str]:
        """Match requested ids (full, `<category>/<name>` or bare `<name>`) against `ids`."""
        matches: dict[str, set[str]] = defaultdict(set)
        for i in ids:
            category_name = i.split("/", 1)[1]
            for key in (i, category_name, category_name.rsplit("/", 1)[-1]):
                matches[key].add(i)
        ambiguous = [w for w in wanted if len(matches.get(w, ())) > 1]
        if ambiguous:
            raise DataError(f"dataset {self.name!r}: sample name(s) {ambiguous[:5]} occur in several categories; "
                            "use <category>/<name>")
        unknown = [w for w in wanted if w not in matches]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], list(matches), n=1)
            raise DataError(f"dataset {self.name!r}: {len(unknown)} requested sample id(s) not found (among the "
                            f"selected categories): {unknown[:5]}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        return {next(iter(matches[w])) for w in wanted}

    def _subsample_seed(self, sample_id: str) -> int:
        return self.point_seed + zlib.crc32(sample_id.encode())

    def _storable(self, sample_id: str) -> bool:
        """Ids come from dataset files; one that could address a path outside the run store is left out
        (and reported) rather than stopping the run."""
        try:
            sample_relpath(sample_id)
            return True
        except InvalidSampleId as exc:
            if sample_id not in self.refused_ids:
                log.warning("dataset %s: sample left out: %s", self.name, exc)
                self.refused_ids[sample_id] = str(exc)
            return False

    def load(self, sample_id: str) -> Sample:
        sample = self.loader.load_sample(sample_id)
        if self.point_fraction < 1.0 and isinstance(sample, DragSample) and sample.dense_handles is not None:
            h, t = subsample_pairs(sample.dense_handles, sample.dense_targets, self.point_fraction,
                                   self._subsample_seed(sample_id))
            sample = sample.replace(dense_handles=h, dense_targets=t)
        return sample

    def inspect(self, sample_id: str) -> SampleInfo:
        """`SampleInfo` after the dataset options (the dense-pair count after point subsampling)."""
        info = self.loader.inspect(sample_id)
        if info.dense_pairs is not None and self.point_fraction < 1.0:
            info = dataclasses.replace(info, dense_pairs=kept_pair_count(info.dense_pairs, self.point_fraction))
        return info

    def __iter__(self) -> Iterator[Sample]:
        for sample_id in self.sample_ids():
            yield self.load(sample_id)


def open_dataset(cfg: Mapping[str, Any], shard: Mapping[str, Any] | None = None) -> Dataset:
    """Build a `Dataset` from a `dataset` config node (`name`, `root`, filters, loader options)."""
    from harness.registry import DATASETS

    cfg = dict(cfg)
    name = cfg.pop("name")
    # The shared options (conf/dataset/_shared.yaml); null means "off", i.e. the `Dataset` default.
    common = {k: v for k in SHARED_OPTIONS if (v := cfg.pop(k, None)) is not None}
    root = cfg.pop("root", None)
    loader = DATASETS.get(name)(root=root, **cfg)
    common["categories"] = list(common.get("categories") or [])
    common["ids"] = list(common.get("ids") or [])
    return Dataset(loader=loader, shard=Shard(**dict(shard or {})), **common)
