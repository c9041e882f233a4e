"""Check a leaderboard submission folder before it is merged (`python -m harness.report validate DIR`).

A submission is what a contributor hands in from one run (README, "Publishing a leaderboard"):

    <submission>/
      results.json            required: the run's results (schema harness/report/results.schema.json)
      run.json                required: the run record (plus run.shard-<i>-of-<n>.json of a sharded run)
      report.html             optional: the run's gallery page, linked from the leaderboard
      store/                  optional: the outputs (method.json, per-sample records and PNGs)

Checks, each problem naming the file and the field:
- the schema of results.json;
- the run files it lists exist and hold the config it hashed (config_sha256) and the commit it names;
- every metric id is known to this checkout's metric registry, with the same version, protocol, direction
  and table scale (a number under another protocol must not land in a column of this one);
- every cell's variant is described (the schema already checks that weight hashes are SHA-256 digests);
- with store/: every variant folder exists, every ok record's PNG has the SHA-256 the record names, and the
  variant's outputs digest matches the results file (the numbers were computed on these outputs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from harness.report.results import RESULTS_FILE, ResultsError, protocol_of, read_results
from harness.store import MethodStore, stable_hash



def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ResultsError(f"{path}: not valid JSON: {exc}") from None


def _run_file_problems(root: Path, run: Mapping[str, Any]) -> Iterator[str]:
    for i, entry in enumerate(run.get("run_files") or []):
        path = root / entry["file"]
        data = _read_json(path)
        if data is None:
            yield f"{path}: missing (results.json run.run_files[{i}] lists it)"
            continue
        if stable_hash(data.get("config") or {}, 64) != entry["config_sha256"]:
            yield f"{path}: config does not match results.json run.run_files[{i}].config_sha256"
        if entry["file"] == "run.json":
            if run.get("config_sha256") and stable_hash(data.get("config") or {}, 64) != run["config_sha256"]:
                yield f"{path}: config does not match results.json run.config_sha256"
            commit = (data.get("git") or {}).get("commit")
            if commit != (run.get("editlab") or {}).get("commit"):
                yield f"{root / RESULTS_FILE}: run.editlab.commit {run['editlab'].get('commit')!r} is not run.json's git.commit {commit!r}"
    if not any(e["file"] == "run.json" for e in run.get("run_files") or []):
        yield f"{root / RESULTS_FILE}: run.run_files does not list run.json"


def _metric_problems(where: str, cells: list[dict[str, Any]]) -> Iterator[str]:
    from harness.registry import METRICS

    for i, cell in enumerate(cells):
        metric_id, at = cell["metric"], f"{where}: cells[{i}] ({cell['dataset']}/{cell['method_key']} {cell['metric']})"
        if metric_id not in METRICS:
            yield f"{at}: metric id {metric_id!r} is not known to this editlab's metric registry"
            continue
        cls = METRICS.get(metric_id)
        expected = {"version": cls.version, "protocol": protocol_of(metric_id),
                    "direction": "higher" if cls.higher_is_better else "lower", "table_scale": float(cls.table_scale)}
        for key, value in expected.items():
            if cell.get(key) != value:
                yield f"{at}.{key}: {cell.get(key)!r}, the registry says {value!r}"


def _store_problems(root: Path, variants: Mapping[str, Any]) -> Iterator[str]:
    for name, variant in variants.items():
        store = MethodStore(root, variant["dataset"], variant["method_key"])
        if not (store.dir / "method.json").is_file():
            yield f"{store.dir}: missing (results.json variants[{name}])"
            continue
        outputs = []
        for path in sorted(store.dir.rglob("*.json")):
            if path.name == "method.json" or path.name.endswith(".scores.json") or "_sets" in path.parts:
                continue
            record = _read_json(path)
            if not isinstance(record, dict) or record.get("status") != "ok" or "sample_id" not in record:
                continue
            sample_id = record["sample_id"]
            if store.verified_png(sample_id, record) is None:
                yield f"{path}: output PNG missing or its SHA-256 is not the record's output.sha256"
            outputs.append([sample_id, (record.get("output") or {}).get("sha256")])
        if stable_hash(sorted(outputs), 64) != variant["outputs_sha256"]:
            yield (f"{store.dir}: outputs ({len(outputs)}) do not match results.json variants[{name}].outputs_sha256 "
                   f"({variant['outputs']} outputs)")


def validate_submission(root: str | Path) -> tuple[list[str], list[str]]:
    """(problems, what was checked) for the submission folder `root`; no problems means it may be merged."""
    root = Path(root)
    where = str(root / RESULTS_FILE)
    if not root.is_dir():
        return [f"{root}: not a folder (a submission is a folder holding results.json and run.json)"], []
    try:
        doc = read_results(root)
    except (ResultsError, FileNotFoundError) as exc:
        return str(exc).splitlines(), []
    checked = [f"{where}: schema version {doc['schema_version']}"]
    try:
        problems = list(_run_file_problems(root, doc["run"]))
    except ResultsError as exc:
        problems = [str(exc)]
    checked.append("run files: " + ", ".join(e["file"] for e in doc["run"].get("run_files") or []))
    for i, cell in enumerate(doc["cells"]):
        if f"{cell['dataset']}/{cell['method_key']}" not in doc["variants"]:
            problems.append(f"{where}: cells[{i}]: variant {cell['dataset']}/{cell['method_key']} is not in variants")
    problems += _metric_problems(where, doc["cells"])
    checked.append(f"{len(doc['cells'])} cells, metric ids: " + ", ".join(sorted({c['metric'] for c in doc['cells']})))
    if (root / "store").is_dir():
        problems += _store_problems(root, doc["variants"])
        checked.append(f"store/: outputs of {len(doc['variants'])} variant(s) against their records and results.json")
    if doc["run"]["smoke"]:
        checked.append("smoke run (random-weight networks): `leaderboard` accepts it only with --allow-smoke")
    return problems, checked
