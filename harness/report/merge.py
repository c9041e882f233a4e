"""Merge many runs' `results.json` into one leaderboard: tables per dataset × protocol family.

A row is one method variant: (dataset, store key, model weights). The store key already hashes the method
config, model identity, dtype and kernel choices, so two runs share a row only if they ran the same
variant; the weight hashes (when recorded) keep a fine-tune or another checkpoint of the same identity
apart. Within a row, each metric's cells from different runs are compared:
- cells of the same metric version and settings (feature networks, dtypes) whose n, failed, nan and mean
  agree (to `RTOL`) are one entry, kept once, listing every run that produced it;
- anything else is a **conflict**: each disagreeing entry is shown with its runs and the reason, never
  averaged, because an average of two protocols (or of two sample sets) is neither;
- measurements of the edit itself (`time`, `peak_mem`: metric kind `measurement`) differ by machine by
  nature: they are listed per run, not compared.
Smoke results (random-weight networks) are refused unless `allow_smoke`: a leaderboard of random
networks would be mistaken for one of real ones. Published values from report specs (`reports/*.yaml`)
are attached to the rows their spec rows match (harness.report.table.match_variant), converted from the
spec's display scale to raw values.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from harness.report.collect import Variant
from harness.report.results import default_config, read_results
from harness.report.spec import ReportSpec, load_spec
from harness.report.table import AmbiguousRowError, match_variant
from harness.store import stable_hash

log = logging.getLogger(__name__)

BOARD_SCHEMA = "editlab.leaderboard"
BOARD_VERSION = 1
RTOL = 1e-6  # relative tolerance of "the same number" (float summation order across machines)


class MergeError(ValueError):
    """Results that cannot be merged as asked (a smoke run without --allow-smoke); names the file."""


@dataclass
class Source:
    """One results file and where it came from (its folder holds the run's gallery, if any)."""

    path: Path
    doc: dict[str, Any]

    @property
    def run(self) -> dict[str, Any]:
        return self.doc["run"]


@dataclass
class Board:
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    smoke: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"schema": BOARD_SCHEMA, "schema_version": BOARD_VERSION,
                "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "smoke": self.smoke,
                "runs": self.runs, "tables": self.tables, "conflicts": self.conflicts, "notes": self.notes}


def load_sources(paths: Sequence[str | Path], allow_smoke: bool = False) -> list[Source]:
    """Read and check every results file (a folder means its results.json); one run given twice is kept once."""
    sources: list[Source] = []
    seen: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        path = path / "results.json" if path.is_dir() else path
        doc = read_results(path)
        run = doc["run"]
        if run["smoke"] and not allow_smoke:
            reasons = "; ".join(run["smoke_reasons"][:3]) + (" ..." if len(run["smoke_reasons"]) > 3 else "")
            raise MergeError(f"{path}: smoke run (random-weight networks: {reasons}); its numbers mean nothing. "
                             "Pass --allow-smoke to build a leaderboard of it anyway (it is then marked SMOKE).")
        if run["id"] in seen:
            log.warning("%s: the same run as %s (id %s); kept once", path, seen[run["id"]], run["id"])
            continue
        seen[run["id"]] = path
        sources.append(Source(path, doc))
    if not sources:
        raise MergeError("no results files given")
    return sources


def gpu_label(run: Mapping[str, Any]) -> list[str]:
    """The devices a run edited on, as filter values ("NVIDIA H100 80GB HBM3", or "CPU")."""
    return sorted({d.get("gpu") or "CPU" for d in run.get("devices") or [{}]})


def _row_label(variant: Mapping[str, Any], defaults: Mapping[str, Any] | None) -> str:
    """The method name, plus the config fields that differ from the method's defaults."""
    config = variant.get("config") or {}
    if defaults is None or variant.get("reproduces_release"):
        return variant["method"]
    changed = [f"{k}={config[k]}" for k in sorted(config) if defaults.get(k) != config[k]]
    return f"{variant['method']} [{', '.join(changed)}]" if changed else variant["method"]


def _same_number(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)


def _disagreement(entry: Mapping[str, Any], cell: Mapping[str, Any]) -> str | None:
    """Why `cell` is not the same number as `entry` (None when it is)."""
    if entry["version"] != cell["version"]:
        return f"metric version {entry['version']} vs {cell['version']}"
    if entry["settings"] != cell["settings"]:
        keys = sorted(k for k in set(entry["settings"] or {}) | set(cell["settings"] or {})
                      if (entry["settings"] or {}).get(k) != (cell["settings"] or {}).get(k))
        return "metric settings differ (" + ", ".join(keys) + ")"
    for key in ("n", "failed", "nan"):
        if entry[key] != cell[key]:
            return f"{key} {entry[key]} vs {cell[key]}"
    if not _same_number(entry["mean"], cell["mean"]):
        return f"mean {entry['mean']:.6g} vs {cell['mean']:.6g}" if None not in (entry["mean"], cell["mean"]) else \
            f"mean {entry['mean']} vs {cell['mean']}"
    return None


def _entry(cell: Mapping[str, Any], run_id: str, variant: Mapping[str, Any]) -> dict[str, Any]:
    return {"mean": cell["mean"], "ci": cell["ci"], "n": cell["n"], "failed": cell["failed"], "nan": cell["nan"],
            "metric_failed": cell.get("metric_failed", 0), "version": cell["version"], "settings": cell["settings"],
            "smoke": cell["smoke"], "runs": [run_id], "outputs_sha256": sorted({variant["outputs_sha256"]}),
            "seeds": variant["seeds"]}


def _add_cell(slot: dict[str, Any], cell: Mapping[str, Any], run_id: str, variant: Mapping[str, Any]) -> str | None:
    """Put one run's cell into a row's metric slot; returns the conflict reason if it disagrees."""
    if slot["kind"] == "measurement":
        slot["entries"].append(_entry(cell, run_id, variant))
        return None
    reasons = []
    for entry in slot["entries"]:
        reason = _disagreement(entry, cell)
        if reason is None:
            entry["runs"].append(run_id)
            entry["outputs_sha256"] = sorted(set(entry["outputs_sha256"]) | {variant["outputs_sha256"]})
            return None
        reasons.append(reason)
    slot["entries"].append(_entry(cell, run_id, variant))
    if slot["entries"][:-1]:
        slot["conflict"] = True
        slot["reasons"] = sorted(set(slot.get("reasons", [])) | set(reasons))
        return "; ".join(sorted(set(reasons)))
    return None


def merge(sources: Sequence[Source], specs: Iterable[ReportSpec] = ()) -> Board:
    """The leaderboard of all `sources` (see the module docstring)."""
    board = Board(smoke=any(s.run["smoke"] for s in sources))
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}  # (table id, dataset, row id)
    for source in sources:
        run = source.run
        board.runs[run["id"]] = {**{k: run.get(k) for k in ("id", "date", "editlab", "versions", "devices", "seeds",
                                                             "bootstrap", "smoke", "smoke_reasons", "shards",
                                                             "config_sha256", "out_dir")},
                                 "source": str(source.path), "gpus": gpu_label(run), "gallery": None}
        for cell in source.doc["cells"]:
            variant = source.doc["variants"][f"{cell['dataset']}/{cell['method_key']}"]
            model = variant.get("model") or {}
            weights = model.get("weights")
            row_id = stable_hash([cell["dataset"], cell["method_key"], weights], 12)
            table_id = f"{cell['dataset']}|{cell['protocol']}"
            table = tables.setdefault(table_id, {"id": table_id, "dataset": cell["dataset"], "protocol": cell["protocol"],
                                                 "metrics": {}, "rows": []})
            table["metrics"].setdefault(cell["metric"], {"id": cell["metric"], "direction": cell["direction"],
                                                         "table_scale": cell["table_scale"], "kind": cell.get("kind")})
            row = rows.get((table_id, row_id))
            if row is None:
                row = {"id": row_id, "label": _row_label(variant, default_config(variant["method"])),
                       "method": variant["method"], "method_key": variant["method_key"], "config": variant["config"],
                       "reproduces_release": variant["reproduces_release"], "model": model.get("identity"),
                       "dtype": model.get("dtype"), "weights": weights, "kernels": variant.get("kernels"),
                       "runs": [], "gpus": [], "cells": {}, "paper": {}}
                rows[(table_id, row_id)] = row
                table["rows"].append(row)
            if run["id"] not in row["runs"]:
                row["runs"].append(run["id"])
                row["gpus"] = sorted(set(row["gpus"]) | set(gpu_label(run)))
            slot = row["cells"].setdefault(cell["metric"], {"kind": cell.get("kind"), "conflict": False, "entries": []})
            reason = _add_cell(slot, cell, run["id"], variant)
            if reason:
                board.conflicts.append(f"{cell['dataset']} · {row['label']} · {cell['metric']}: {reason} "
                                       f"(runs {', '.join(e['runs'][0] for e in slot['entries'])})")
    for table in tables.values():
        table["metrics"] = sorted(table["metrics"].values(), key=lambda m: m["id"])
        table["rows"].sort(key=lambda r: r["label"])
    board.tables = [tables[k] for k in sorted(tables)]
    for spec in specs:
        _attach_published(board, spec)
    return board


def _attach_published(board: Board, spec: ReportSpec) -> None:
    """Published values of `spec` beside the rows its spec rows match (raw scale: value / spec scale)."""
    scale = {m.id: m.scale for m in spec.metrics}
    for table in board.tables:
        if table["dataset"] not in spec.datasets:
            continue
        variants = [Variant(table["dataset"], r["method_key"], r["method"], r["config"], r["model"], {}) for r in table["rows"]]
        by_key = {r["method_key"]: r for r in table["rows"]}
        metric_ids = {m["id"] for m in table["metrics"]}
        for spec_row in spec.rows:
            published = {m: p for m, p in spec_row.published.get(table["dataset"], {}).items()
                         if m in metric_ids and p.value is not None}
            if not published:
                continue
            try:
                variant = match_variant(spec_row, table["dataset"], variants, spec.model)
            except AmbiguousRowError as exc:
                board.notes.append(f"{spec.path.name}: {exc}; its published values are not shown")
                continue
            target = by_key.get(variant.key) if variant is not None else None
            if target is None:  # a published-only row: the method has not run here (or the harness lacks it)
                target = {"id": stable_hash([spec.stem, spec_row.label, table["id"]], 12), "label": f"{spec_row.label} (paper)",
                          "method": spec_row.method or spec_row.label, "method_key": None, "config": spec_row.params,
                          "reproduces_release": None, "model": spec_row.model, "dtype": None, "weights": None,
                          "kernels": None, "runs": [], "gpus": [], "cells": {}, "paper": {}, "published_only": True}
                table["rows"].append(target)
            for metric_id, p in published.items():
                target["paper"][metric_id] = {"value": p.value / scale[metric_id], "unverified": p.unverified,
                                              "note": p.note, "source": spec_row.source, "spec": spec.path.name,
                                              "spec_row": spec_row.label}


def load_specs(paths: Iterable[Path]) -> list[ReportSpec]:
    """The report specs whose published values the site shows (a broken one is an error naming it)."""
    return [load_spec(path) for path in paths]
