"""`results.json`: one run's leaderboard cells with their provenance, in a versioned, documented format.

A results file is what a run contributes to a leaderboard built from many runs and machines
(`harness.report.merge`, `harness.report.site`). It is derived from the store alone (method.json,
per-sample records and cached scores, the run files `run*.json`), never from what one process held in
memory, so `python -m harness.report results --store DIR` regenerates exactly what the run wrote, and a
sharded run's merge step (`shard.count=1`, `stages=[score,report]`) writes one file for all shards.

Layout (schema: `harness/report/results.schema.json`, version `SCHEMA_VERSION`):
- `run`: where the numbers came from — editlab version and git commit, library versions, device(s), seeds,
  dates, the config's hash, the run files, the gallery page, and `smoke` (some network had random weights).
- `variants`: per dataset × method variant (store key): method, config, whether the config is the method's
  defaults (`reproduces_release`), model identity, dtype and weight hashes (when the run recorded them),
  edit seeds, and a digest of its outputs' SHA-256s (equal digests = bit-identical outputs).
- `cells`: per dataset × variant × metric id: mean, n, failed, nan, metric_failed, the 95% percentile
  bootstrap interval (seeded exactly as `leaderboard_ci.csv`), direction (↑/↓), table scale, the metric's
  version and settings (feature networks and their hashes), and whether the cell is a smoke cell.
Why a cell carries its metric settings: two runs agree on a number only if they computed the same protocol
with the same networks; the merge compares cells on exactly those fields.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from harness.metrics.base import reducer, reduction_name
from harness.report.collect import StoreScores, load_store
from harness.stats import LEVEL, RESAMPLES, cell_seed, mean_ci
from harness.store import MethodStore, atomic_write_json, iter_method_stores, stable_hash

log = logging.getLogger(__name__)

SCHEMA_NAME = "editlab.results"
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("results.schema.json")
RESULTS_FILE = "results.json"
NO_PROTOCOL = "run"  # metric ids without `@<protocol>` (time, peak_mem) are read from the run record


def protocol_of(metric_id: str) -> str:
    """The protocol a metric id names (`md_dift@regiondrag` → `regiondrag`); `run` for record metrics."""
    return metric_id.split("@", 1)[1] if "@" in metric_id else NO_PROTOCOL


def editlab_version() -> str | None:
    try:
        return importlib.metadata.version("editlab")
    except importlib.metadata.PackageNotFoundError:
        return None


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _read_run_files(out_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """`run.json` first, then the shards' `run.shard-<i>-of-<n>.json` (a sharded run's merge step)."""
    files = []
    for path in [out_dir / "run.json", *sorted(out_dir.glob("run.shard-*-of-*.json"))]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            files.append((path.name, data))
    return files


def _is_random(identity: Any) -> bool:
    return "random" in str(identity or "")


def _weights(run: Mapping[str, Any], method: str) -> dict[str, Any] | None:
    """The weight files and SHA-256s of the variant's model, from run.json `weights` (the weights lock's run
    record, keyed by config setting: `method.<name>.model` for a method with its own model, else `model`);
    None when the run recorded none (random weights, or a run written before the weights lock)."""
    table = run.get("weights")
    if not isinstance(table, Mapping):
        return None
    record = table.get(f"method.{method}.model") or table.get("model")
    if not isinstance(record, Mapping) or not record.get("files"):
        return None
    return {k: record[k] for k in ("setting", "source", "revision", "variant", "files") if record.get(k) is not None}


def default_config(method: str) -> dict[str, Any] | None:
    """The method's default config (normalised as stored), or None when the method is not registered here;
    a variant whose config equals it reproduces the release (every default reproduces released code)."""
    from harness.registry import METHODS

    if method not in METHODS:
        return None
    return json.loads(json.dumps(METHODS.get(method).build({}).describe().get("config") or {}, sort_keys=True, default=str))


def _variant(store: MethodStore, description: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """One variant's provenance, from its method.json and its records."""
    method = description.get("method", store.method_key.rsplit("-", 1)[0])
    config = json.loads(json.dumps(description.get("config") or {}, sort_keys=True, default=str))
    seeds, versions, outputs = set(), None, []
    for path in sorted(store.dir.rglob("*.json")):
        if path.name == "method.json" or path.name.endswith(".scores.json") or "_sets" in path.parts:
            continue
        record = _json(path)
        if not isinstance(record, dict) or "sample_id" not in record:
            continue
        if record.get("seed") is not None:
            seeds.add(int(record["seed"]))
        versions = versions or record.get("versions")
        if record.get("status") == "ok":
            outputs.append([record["sample_id"], (record.get("output") or {}).get("sha256")])
    model = dict(description.get("model") or {}) or None
    if model is not None:
        model["weights"] = _weights(run, method)
    defaults = default_config(method)
    return {"dataset": store.dataset, "method": method, "method_key": store.method_key, "config": config,
            "reproduces_release": None if defaults is None else config == defaults,
            "model": model, "kernels": description.get("kernels"), "seeds": sorted(seeds),
            "versions": versions, "outputs": len(outputs), "outputs_sha256": stable_hash(sorted(outputs), 64)}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _metric_info(metric_id: str) -> dict[str, Any]:
    from harness.registry import METRICS

    if metric_id not in METRICS:  # a plugin's metric this process did not import: validate names it
        return {"version": None, "direction": None, "table_scale": 1.0, "aggregation": None, "kind": None}
    cls = METRICS.get(metric_id)
    return {"version": cls.version, "direction": "higher" if cls.higher_is_better else "lower",
            "table_scale": float(cls.table_scale), "aggregation": reduction_name(cls),
            "kind": "output" if cls.uses_output else "measurement"}



def _settings_smoke(settings: Mapping[str, Any] | None) -> list[str]:
    return [f"{k}={settings[k]}" for k in sorted(settings or {}) if k in ("network", "model") and _is_random(settings[k])]


def _cells(data: StoreScores, variants: Mapping[str, dict[str, Any]], resamples: int, seed: int) -> list[dict[str, Any]]:
    """Per-sample metrics: each metric's own `reduce` with a bootstrap interval, over the fresh rows."""
    cells = []
    scores = data.scores
    for (dataset, key), df in scores.groupby(["dataset", "method_key"], sort=True):
        variant = variants[f"{dataset}/{key}"]
        failed = int(df.loc[df["status"] == "failed", "sample_id"].nunique())
        for metric_id, rows in df[df["metric"].notna() & df["sample_id"].notna()].groupby("metric", sort=True):
            info = _metric_info(str(metric_id))
            ok = rows[rows["status"] == "ok"]
            s = mean_ci(ok["value"], ok["weight"], failed=failed, resamples=resamples, reduce=reducer(str(metric_id)),
                        seed=cell_seed(seed, dataset, key, metric_id))
            settings = data.settings.get((dataset, key), {}).get(metric_id)
            cells.append(_cell(variant, str(metric_id), info, dict(
                mean=_finite(s.mean), n=s.n, failed=failed, nan=int((rows["status"] == "undefined").sum()),
                metric_failed=int((rows["status"] == "metric_failed").sum()),
                ci=None if not math.isfinite(s.ci_low) else [s.ci_low, s.ci_high], settings=settings)))
    return cells


def _set_cells(data: StoreScores, variants: Mapping[str, dict[str, Any]], failed: Mapping[str, int]) -> list[dict[str, Any]]:
    """Set-level metrics (FID): one value per variant, no bootstrap interval (the unit is the whole set).
    The rows are the store reader's (harness/results.py: only entries fresh for the variant's current
    members, metric version and features), so a stale FID is never published."""
    cells = []
    scores = data.scores
    for row in scores[scores["sample_id"].isna() & scores["metric"].notna()].itertuples(index=False):
        name = f"{row.dataset}/{row.method_key}"
        ok = row.status == "ok"
        cells.append(_cell(variants[name], str(row.metric), _metric_info(str(row.metric)), dict(
            mean=_finite(row.value) if ok else None, n=int(row.weight), failed=failed.get(name, 0),
            nan=int(row.status == "undefined"), metric_failed=int(row.status == "metric_failed"), ci=None,
            settings=data.settings.get((row.dataset, row.method_key), {}).get(row.metric))))
    return cells


def _cell(variant: Mapping[str, Any], metric_id: str, info: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """One cell: `values` holds mean, n, failed, nan, metric_failed, ci and the score settings."""
    model, settings = variant.get("model") or {}, values["settings"]
    smoke = _settings_smoke(settings) + (["model=" + model["identity"]] if _is_random(model.get("identity")) else [])
    return {"dataset": variant["dataset"], "method_key": variant["method_key"], "metric": metric_id,
            "protocol": protocol_of(metric_id), **info, "mean": values["mean"], "n": int(values["n"]),
            "failed": int(values["failed"]), "nan": int(values["nan"]), "metric_failed": int(values["metric_failed"]),
            "ci": values["ci"], "settings": settings, "smoke": smoke}


def _run_section(out_dir: Path, runs: list[tuple[str, dict[str, Any]]], variants: Mapping[str, dict[str, Any]],
                 cells: list[dict[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    main = runs[0][1] if runs else {}
    config = main.get("config") or {}
    features = config.get("features") or {}
    reasons = sorted({f"{c['dataset']}/{c['method_key']} {c['metric']}: {r}" for c in cells for r in c["smoke"]})
    started = main.get("started_at")
    git = main.get("git") or {}
    return {
        "id": stable_hash({"out_dir": str(out_dir), "started_at": started, "files": [n for n, _ in runs],
                           "commit": git.get("commit")}, 12),
        "out_dir": str(out_dir),
        "date": main.get("finished_at") or started,
        "started_at": started,
        "editlab": {"version": editlab_version(), "commit": git.get("commit"), "dirty": git.get("dirty")},
        "versions": main.get("versions") or {},
        "devices": [dict(r.get("device") or {}, file=name) for name, r in runs],
        "seeds": {"edit": config.get("seed"), "features": features.get("seed") if isinstance(features, Mapping) else None,
                  "bootstrap": seed, "variants": sorted({s for v in variants.values() for s in v["seeds"]})},
        "config_sha256": stable_hash(config, 64) if config else None,
        "run_files": [{"file": name, "status": r.get("status"), "started_at": r.get("started_at"),
                       "finished_at": r.get("finished_at"), "config_sha256": stable_hash(r.get("config") or {}, 64)}
                      for name, r in runs],
        "shards": max(1, sum(name.startswith("run.shard-") for name, _ in runs)),
        # the run page the report stage writes right after this file (reporting.html); the site links it if present
        "gallery": "report.html",
        "bootstrap": {"resamples": resamples, "level": LEVEL, "method": "percentile", "seed": seed},
        "smoke": bool(reasons),
        "smoke_reasons": reasons,
    }


def build_results(out_dir: str | Path, *, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The results document of the run store under `out_dir` (see the module docstring)."""
    out_dir = Path(out_dir).resolve()
    if not (out_dir / "store").is_dir():
        raise FileNotFoundError(f"{out_dir}: no run store (store/) here; pass a run's out_dir")
    runs = _read_run_files(out_dir)
    main = runs[0][1] if runs else {}
    data = load_store(out_dir)
    variants = {}
    for store in iter_method_stores(out_dir):
        variants[f"{store.dataset}/{store.method_key}"] = _variant(store, store.description(), main)
    failed = {f"{d}/{k}": int(df.loc[df["status"] == "failed", "sample_id"].nunique())
              for (d, k), df in data.scores.groupby(["dataset", "method_key"])} if len(data.scores) else {}
    cells = _cells(data, variants, resamples, seed) + _set_cells(data, variants, failed)
    cells.sort(key=lambda c: (c["dataset"], c["method_key"], c["metric"]))
    return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run": _run_section(out_dir, runs, variants, cells, resamples, seed),
            "variants": variants, "cells": cells, "stale_values": data.stale}


def write_results(out_dir: str | Path, *, resamples: int = RESAMPLES, seed: int = 0) -> Path:
    """Write `<out_dir>/results.json` (called once by the report stage; also `python -m harness.report results`)."""
    path = Path(out_dir) / RESULTS_FILE
    atomic_write_json(path, build_results(out_dir, resamples=resamples, seed=seed))
    return path


class ResultsError(ValueError):
    """A results file that is not valid JSON or breaks the schema; the message names the file and field."""


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def schema_errors(doc: Any, where: str) -> list[str]:
    """Every way `doc` breaks the results schema, each naming the file and the field (empty: valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        field = "/".join(map(str, error.absolute_path)) or "(top level)"
        errors.append(f"{where}: {field}: {error.message}")
    return errors


def read_results(path: str | Path) -> dict[str, Any]:
    """A results file, checked against the schema; a directory means its `results.json`."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such results file (write it with: python -m harness.report results "
                                f"--store <out_dir>)") from None
    except ValueError as exc:
        raise ResultsError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(doc, dict) and doc.get("schema_version") not in (None, SCHEMA_VERSION):
        raise ResultsError(f"{path}: schema_version {doc.get('schema_version')!r}; this editlab reads version "
                           f"{SCHEMA_VERSION}")
    errors = schema_errors(doc, str(path))
    if errors:
        raise ResultsError("\n".join(errors[:20]) + (f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""))
    return doc


__all__ = ["RESULTS_FILE", "SCHEMA_VERSION", "ResultsError", "build_results", "default_config", "protocol_of",
           "read_results", "schema_errors", "write_results"]
