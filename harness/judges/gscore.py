"""GoodDrag's GScore (`evaluation/GScore.ipynb` @3015cff; protocols_2025.md §6.4), re-implemented with a
pinned judge: `gscore@gooddrag`.

What the judge is asked, per sample and repetition: template `gscore_gooddrag_v1` (GoodDrag's rating
paragraph, generalised to n methods, plus a closing JSON object of label → rating, templates/README.md)
with the source image (Image 1) and every compared method's output labelled A, B, C, … (Images 2, 3, …),
text first. GoodDrag showed its three methods in one fixed order (A = GoodDrag); here the order is a seeded
permutation per (sample, repetition) — seed = SHA-256 of [seed, sample id, repetition] — so that position
bias averages out over repetitions and every rerun shows the same orders.

Parsing (harness/judges/parse.py `parse_ratings`, ours: the reference released none): exactly one JSON
object whose keys are exactly the labels, ratings numbers in [1, 10]; anything else leaves that repetition
undefined for every method in it. A method's per-sample GScore is the mean of its parsed ratings over the
repetitions (GoodDrag: 10 repetitions at temperature 0.4); the table averages samples.

Why a command and not a per-sample metric: a rating depends on the other methods' outputs shown beside it,
which a per-sample metric does not see. `python -m harness.judges gscore <out_dir>` reads a finished run
(run.json for the dataset and features; the store for the outputs), asks the judge (every answer cached:
harness/judges/cache.py), and writes
- each compared sample's `gscore@gooddrag` entry into every method's score cache, under the run's feature
  key with this judge, so that a later `python -m harness … judge=<same> 'metrics=[…,gscore@gooddrag]'`
  and `python -m harness.report` read it like any other score (the entry lists the compared outputs);
- `<out_dir>/gscore.csv` (score rows) and `<out_dir>/gscore.md` (per-method means; a smoke banner for a
  random-weight judge).
Only samples with an output from every compared method take part. Rerun the command after any compared
output changes (its answers for unchanged inputs come from the cache).
"""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from harness.judges import Judge, JudgeRequest, build_judge, decoding
from harness.judges.parse import parse_ratings
from harness.judges.templates import load_template
from harness.store import MethodStore, atomic_write_bytes, decode_png, iter_method_stores, stable_hash

log = logging.getLogger("harness")

METRIC_ID = "gscore@gooddrag"
VERSION = 1
TEMPLATE = "gscore_gooddrag_v1"
LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class GScoreError(ValueError):
    """A GScore request that cannot run (no run.json, too few methods, no judge); the message says what to do."""


def order_for(seed: int, sample_id: str, repetition: int, count: int) -> list[int]:
    """The seeded display order (indices into the compared methods) of one sample and repetition."""
    rng = np.random.default_rng(int(stable_hash([seed, sample_id, repetition], 16), 16))
    return [int(i) for i in rng.permutation(count)]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + (", and " if len(items) > 2 else " and ") + items[-1]


def prompt(count: int) -> str:
    labels = [f"'{c}'" for c in LABELS[:count]]
    return load_template(TEMPLATE).render(
        count=str(count), labels=_join(labels), label_images=_join([f"{l} (Image {i + 2})" for i, l in enumerate(labels)]),
        example="{" + ", ".join(f'"{c}": <rating>' for c in LABELS[:count]) + "}")


@dataclass
class GScoreRun:
    rows: pd.DataFrame
    summary: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    judge: Judge | None = None


def run_config_and_judge(out_dir: Path, judge_cfg: Mapping[str, Any] | None, purpose: str) -> tuple[dict, dict]:
    """A finished run's resolved config and the judge to ask about its outputs (`judge_cfg`, else the run's
    own); `purpose` completes the message when there is no run there."""
    run_path = Path(out_dir) / "run.json"
    if not run_path.is_file():
        raise GScoreError(f"{run_path} not found: {purpose} (python -m harness …)")
    cfg = json.loads(run_path.read_text())["config"]
    judge_cfg = dict(judge_cfg or cfg.get("judge") or {})
    if not judge_cfg:
        raise GScoreError("no judge: pass judge=<name> (conf/judge/), or run with one configured")
    return cfg, judge_cfg


def compute(out_dir: Path, judge_cfg: Mapping[str, Any] | None = None, methods: list[str] | None = None,
            repeats: int = 10, seed: int = 0, device: str = "auto") -> GScoreRun:
    """Rate every method variant of a finished run side by side (module docstring) and store the scores."""
    import torch

    from harness.data.base import open_dataset
    from harness.determinism import kernel_choices
    from harness.metrics.base import MetricContext

    out_dir = Path(out_dir)
    cfg, judge_cfg = run_config_and_judge(out_dir, judge_cfg, "GScore rates the outputs of a finished run")
    if repeats < 1:
        raise GScoreError(f"--repeats must be at least 1, got {repeats}")
    dataset = open_dataset(cfg["dataset"])
    stores = [s for s in iter_method_stores(out_dir) if s.dataset == dataset.key]
    names = {s.method_key: s.description().get("method", s.method_key) for s in stores}
    if methods:
        unknown = set(methods) - set(names) - set(names.values())
        if unknown:
            raise GScoreError(f"--methods: {sorted(unknown)} not in {out_dir} (variants: {', '.join(sorted(names))})")
        stores = [s for s in stores if s.method_key in methods or names[s.method_key] in methods]
    if len(stores) < 2:
        raise GScoreError(f"GScore compares methods: {out_dir} holds {len(stores)} variant(s) of dataset {dataset.key}")
    if len(stores) > len(LABELS):
        raise GScoreError(f"at most {len(LABELS)} methods fit one GScore prompt, got {len(stores)}")
    duplicated = {n for n in names.values() if list(names.values()).count(n) > 1}
    labels_of = {s.method_key: f"{names[s.method_key]} [{s.method_key}]" if names[s.method_key] in duplicated
                 else names[s.method_key] for s in stores}
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    judge = build_judge(judge_cfg, dev)
    features = {**(cfg.get("features") or {}), "judge": judge_cfg}
    feature_key = MetricContext(features, device="cpu", kernels=kernel_choices(cfg)).key
    template = load_template(TEMPLATE)
    text = prompt(len(stores))
    dec = decoding(judge_cfg)
    settings = {"model": str(judge.identity.get("model")), "judge": judge.identity, "template": template.id,
                "template_sha256": template.sha256[:16], "decoding": dec.as_dict(), "repeats": repeats, "seed": seed,
                "methods": [labels_of[s.method_key] for s in stores], "scale": "1-10",
                "order": "seeded permutation per (sample, repetition)"}
    rows, skipped = [], []
    for sample_id in dataset.sample_ids():
        outputs = _outputs(stores, sample_id)
        if outputs is None:
            skipped.append(sample_id)
            continue
        source = dataset.load(sample_id).image
        orders = [order_for(seed, sample_id, r, len(stores)) for r in range(repeats)]
        requests = [JudgeRequest(template.id, template.sha256, text, (source, *(outputs[i][1] for i in order)), dec, r)
                    for r, order in enumerate(orders)]
        replies = judge.ask(requests)
        ratings: dict[str, list[float]] = {s.method_key: [] for s in stores}
        draws = []
        for r, (order, reply) in enumerate(zip(orders, replies)):
            labels = list(LABELS[:len(order)])
            parsed, reason = parse_ratings(reply.text, labels)
            shown = [stores[i].method_key for i in order]
            draw = {"repetition": r, "order": shown, "raw": reply.text, "cached": reply.cached, "key": reply.key[:16]}
            if parsed is None:
                draw["undefined"] = reason
            else:
                draw["ratings"] = {key: parsed[label] for label, key in zip(labels, shown)}
                for key, value in draw["ratings"].items():
                    ratings[key].append(value)
            draws.append(draw)
        members = {s.method_key: outputs[i][0] for i, s in enumerate(stores)}
        for i, store in enumerate(stores):
            values = ratings[store.method_key]
            info: dict[str, Any] = {"draws": draws, "members": members, "n_parsed": len(values), "n_draws": repeats,
                                    "std": statistics.stdev(values) if len(values) > 1 else None}
            if not values:
                info["nan"] = "judge answer unparseable: " + "; ".join(sorted({d["undefined"] for d in draws}))
            value = float(statistics.fmean(values)) if values else float("nan")
            entry = {"value": value, "weight": 1.0, "version": VERSION, "features": feature_key,
                     "output_sha256": outputs[i][0], "settings": settings, "info": info}
            store.update_scores(sample_id, {METRIC_ID: entry})
            rows.append({"dataset": dataset.key, "method": labels_of[store.method_key], "method_key": store.method_key,
                         "sample_id": sample_id, "metric": METRIC_ID, "value": value, "weight": 1.0,
                         "status": "ok" if values else "undefined"})
    if skipped:
        log.warning("GScore: %d sample(s) lack an output from some compared method and are left out: %s",
                    len(skipped), skipped[:5])
    frame = pd.DataFrame(rows, columns=["dataset", "method", "method_key", "sample_id", "metric", "value", "weight", "status"])
    summary = _summary(frame)
    _write(out_dir, frame, summary, settings, skipped, judge)
    return GScoreRun(frame, summary, skipped, judge)


def _outputs(stores: list[MethodStore], sample_id: str) -> list[tuple[str, np.ndarray]] | None:
    out = []
    for store in stores:
        record = store.load_record(sample_id)
        png = store.verified_png(sample_id, record) if record else None
        if png is None:
            return None
        out.append((record["output"]["sha256"], decode_png(png)))
    return out


def _summary(frame: pd.DataFrame) -> pd.DataFrame:
    groups = []
    for (dataset, method), df in frame.groupby(["dataset", "method"], sort=True):
        ok = df[df["status"] == "ok"]["value"]
        groups.append({"dataset": dataset, "method": method, METRIC_ID: float(ok.mean()) if len(ok) else np.nan,
                       "std_over_samples": float(ok.std(ddof=1)) if len(ok) > 1 else np.nan,
                       "n": int(len(ok)), "undefined": int((df["status"] == "undefined").sum())})
    return pd.DataFrame(groups, columns=["dataset", "method", METRIC_ID, "std_over_samples", "n", "undefined"])


def _write(out_dir: Path, frame: pd.DataFrame, summary: pd.DataFrame, settings: Mapping[str, Any],
           skipped: list[str], judge: Judge) -> None:
    from harness.report.leaderboard import markdown_table

    atomic_write_bytes(out_dir / "gscore.csv", frame.drop(columns=["method_key"]).to_csv(index=False).encode())
    lines = ["# GScore (gscore@gooddrag)", ""]
    if "random" in settings["model"]:
        lines += [f"> **SMOKE RUN — these numbers mean nothing.** The judge has random weights ({settings['model']}).", ""]
    lines += [f"Judge `{settings['model']}` ({json.dumps(settings['judge'], sort_keys=True)}), template "
              f"`{settings['template']}`, {settings['repeats']} repetitions per sample with a seeded method order "
              f"(seed {settings['seed']}); ratings 1–10, mean over parsed repetitions, then over samples. "
              f"`undefined`: samples with no parsable answer. Judge calls this time: {judge.calls}, "
              f"answers from the cache: {judge.cache_hits}.", ""]
    if skipped:
        lines += [f"Left out ({len(skipped)}): samples without an output from every method.", ""]
    lines += [markdown_table(summary, ".2f"), ""]
    atomic_write_bytes(out_dir / "gscore.md", "\n".join(lines).encode())
