"""Drag-Back (DragLoRA, protocols_2025.md §3 and §6.2): drag, then drag the result back, and compare the round
trip with the original.

    python -m harness experiment=drag_back dataset=demo method=regiondrag

An experiment config adds a `drag_back` node (conf/experiment/drag_back.yaml). For each method variant:

1. **Forward leg**: the ordinary run of the method on the dataset, scored with `metrics`, stored under
   `store/<dataset>/<method-key>/` like any run (and shared with one: it is reused, not redone).
2. **Back leg**: the same method on a derived dataset `<dataset>@back-<method-key>` whose samples are the
   forward outputs with handles and targets swapped (the dense region pairs too), the same mask(s) and
   prompt, and the *original* image as `ground_truth`. DragLoRA retrains its reconstruction LoRA on the
   dragged image; here each method prepares itself on its input as it always does (per-sample LoRA included).
   Stored under `store/<dataset>@back-<method-key>/<method-key>/`, reused on a rerun.
3. The back leg is scored with `drag_back.metrics`, the `*_gt@draglora` metrics by default
   (harness/metrics/ground_truth.py: 1 − LPIPS, CLIP cosine and `nn.MSELoss` against the original, as
   `run_eval_similarity.py` scores them).

Only samples whose forward edit succeeded go back (the others are listed in the table's `missing` count).
A back-leg output is tied to the forward output it started from (`forward.json` in its store folder): when a
forward output changes, its stale back-leg record is dropped and the sample is dragged back again.

Outputs: `<out_dir>/drag_back/table.csv` (long: leg, method, metric, mean, interval, n) and `table.md` (one
row per method: forward metrics, then round-trip metrics), plus the usual scores.csv / leaderboard.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from harness import determinism
from harness.data.base import DataError, Dataset, DatasetLoader, SampleInfo
from harness.metrics.base import reducer
from harness.planning import ConfigError, MethodPlan, plan_methods, plan_metrics
from harness.report.leaderboard import markdown_table, report_stage
from harness.run import Run
from harness.run_record import score_settings, smoke_reasons
from harness.stages import edit_and_score
from harness.stats import RESAMPLES, cell_seed, mean_ci
from harness.store import MethodStore, atomic_write_bytes, atomic_write_json, decode_png
from harness.types import DragSample

DEFAULT_BACK_METRICS = ("lpips_alex_gt@draglora", "if_gt@draglora", "clip_gt@draglora", "mse_gt@draglora")


def swapped(sample: DragSample, forward_output: Any) -> DragSample:
    """The back-leg sample: the forward output as the source, handles ⇄ targets (sparse and dense), the same
    masks and prompt, and the original image as the ground truth."""
    dense = ({} if sample.dense_handles is None else
             {"dense_handles": sample.dense_targets, "dense_targets": sample.dense_handles})
    return sample.replace(image=forward_output, handles=sample.targets, targets=sample.handles, regions=(),
                          ground_truth=sample.image, meta={**sample.meta, "drag_back": True}, **dense)


class DragBackLoader(DatasetLoader):
    """The back leg's samples: the forward dataset's selected samples whose forward output is stored and ok."""

    family = "drag"

    def __init__(self, forward: Dataset, store: MethodStore) -> None:
        super().__init__(None)
        self.name = forward.name  # same sample ids as the forward leg
        self.forward, self.store = forward, store

    def list_ids(self) -> list[str]:
        return [i for i in self.forward.sample_ids() if self.store.trusted_record(i) is not None]

    def load_sample(self, sample_id: str) -> DragSample:
        record = self.store.trusted_record(sample_id)
        data = None if record is None else self.store.verified_png(sample_id, record)
        if data is None:
            raise DataError(f"{self.store.image_path(sample_id)}: the forward output is missing or does not match its record")
        return swapped(self.forward.load(sample_id), decode_png(data))

    def inspect(self, sample_id: str) -> SampleInfo:
        info = self.forward.inspect(sample_id)
        return SampleInfo(info.sample_id, info.category, info.size, info.pairs, info.dense_pairs, True)

    def fingerprint(self, sample_id: str) -> str:
        record = self.store.trusted_record(sample_id) or {}
        return f"{self.forward.loader.fingerprint(sample_id)}+forward:{(record.get('output') or {}).get('sha256', '')[:16]}"


@dataclass
class DragBackDataset(Dataset):
    """`Dataset` over a `DragBackLoader`; its key names the forward leg it reverses."""

    forward_key: str = ""

    @property
    def key(self) -> str:
        return self.forward_key


def back_dataset(forward: Dataset, out_dir: Path, plan: MethodPlan) -> DragBackDataset:
    store = MethodStore(out_dir, forward.key, plan.key)
    return DragBackDataset(loader=DragBackLoader(forward, store), forward_key=f"{forward.key}@back-{plan.key}")


def drop_stale_back_legs(back: DragBackDataset, out_dir: Path, plan: MethodPlan) -> int:
    """Remove back-leg records made from a forward output that has since changed; update `forward.json`."""
    loader: DragBackLoader = back.loader  # type: ignore[assignment]
    back_store = MethodStore(out_dir, back.key, plan.key)
    ledger_path = back_store.dir / "forward.json"
    try:
        ledger = json.loads(ledger_path.read_text())
    except (OSError, ValueError):
        ledger = {}
    current = {i: loader.store.trusted_record(i)["output"]["sha256"] for i in back.sample_ids()}
    dropped = 0
    for sample_id, sha in current.items():
        if ledger.get(sample_id) not in (None, sha) and back_store.record_path(sample_id).exists():
            with back_store.sample_lock(sample_id):
                back_store.record_path(sample_id).unlink(missing_ok=True)
                back_store.scores_path(sample_id).unlink(missing_ok=True)
            dropped += 1
    atomic_write_json(ledger_path, {**ledger, **current})
    return dropped


def drag_back_table(scores: pd.DataFrame, forward_ids: Sequence[str], back_ids: Sequence[str], samples: Mapping[str, int],
                    *, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Long table: one row per leg × method × metric with mean, 95% bootstrap interval and `n`; `missing` counts
    the method's samples that did not complete the round trip."""
    rows = []
    for leg, ids in (("forward", forward_ids), ("back", back_ids)):
        for (method, key), df in scores[scores["leg"] == leg].groupby(["method", "method_key"], sort=False):
            done = df.loc[df["status"] != "failed", "sample_id"].nunique()
            for metric_id in ids:
                cell = df[(df["metric"] == metric_id) & (df["status"] == "ok")]
                s = mean_ci(cell["value"], cell["weight"], resamples=resamples, reduce=reducer(metric_id),
                            seed=cell_seed(seed, leg, key, metric_id))
                rows.append({"leg": leg, "method": method, "method_key": key, "metric": metric_id, "mean": s.mean,
                             "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n, "missing": samples.get(key, 0) - done})
    return pd.DataFrame(rows, columns=["leg", "method", "method_key", "metric", "mean", "ci_low", "ci_high", "n", "missing"])


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: `forward: <metric>` columns, then `round trip: <metric>` columns, means on the
    display scale, with `n` = samples that completed the round trip."""
    from harness.report.plots import metric_display

    out = []
    repeated = table.groupby("method")["method_key"].transform("nunique") > 1
    labels = table["method"].where(~repeated, table["method"] + " [" + table["method_key"] + "]")
    for label, df in table.assign(label=labels).groupby("label", sort=False):
        row: dict[str, Any] = {"method": label}
        for leg, prefix in (("forward", "forward"), ("back", "round trip")):
            for _, cell in df[df["leg"] == leg].iterrows():
                name, scale = metric_display(cell["metric"])
                row[f"{prefix}: {name}"] = "—" if pd.isna(cell["mean"]) else f"{cell['mean'] * scale:.4f}"
        back = df[df["leg"] == "back"]
        row["n"] = int(back["n"].max()) if len(back) else 0
        row["missing"] = int(back["missing"].max()) if len(back) else 0
        out.append(row)
    return pd.DataFrame(out)


def run_drag_back(run: Run) -> dict[str, Any]:
    """Both legs of every method, then the drag-back table and the run's report."""
    from harness.data.base import open_dataset

    container, out_dir, stages = run.config, run.out_dir, run.stages
    spec = dict(container["drag_back"] or {})
    dataset = open_dataset(container["dataset"], container.get("shard"))
    if dataset.family != "drag":
        raise ConfigError(f"experiment=drag_back needs a drag dataset; {dataset.name!r} holds {dataset.family} samples")
    plans = plan_methods(container.get("method") or {}, container["model"], dataset, determinism.kernel_choices(container))
    forward_ids = list(run.metric_ids)
    back_ids = list(spec.get("metrics") or DEFAULT_BACK_METRICS)
    forward_metrics, back_metrics = plan_metrics(forward_ids, dataset), plan_metrics(back_ids, dataset)
    run.start(dataset, plans=plans, metric_ids=forward_ids + back_ids)

    summary: dict[str, Any] = {"out_dir": str(out_dir), "edit": {}}
    forward = edit_and_score(container, dataset, out_dir, plans, forward_metrics, stages,
                             on_edited=run.announcer(summary["edit"], "forward", "forward/"))
    run.add_stage_seconds(forward.seconds)
    frames = [] if forward.scores is None else [forward.scores.assign(leg="forward")]
    backs = []
    for plan in plans:
        back = back_dataset(dataset, out_dir, plan)
        if "edit" in stages and (dropped := drop_stale_back_legs(back, out_dir, plan)):
            print(f"[drag_back] {plan.name}: {dropped} back-leg output(s) made from an older forward output, redone")
        results = edit_and_score(container, back, out_dir, [plan], back_metrics, stages,
                                 on_edited=run.announcer(summary["edit"], "back", "back/"))
        run.add_stage_seconds(results.seconds)
        backs.append(back)
        if results.scores is not None:
            frames.append(results.scores.assign(leg="back"))
    if "report" in stages and frames:
        with run.timed("report"):
            summary.update(_report(run, dataset, plans, backs, pd.concat(frames, ignore_index=True), back_ids))
    run.finish(dataset, {"drag_back": {"back_keys": [b.key for b in backs], "metrics": back_ids},
                         "edit_summary": summary["edit"]})
    return summary


def _report(run: Run, dataset: Dataset, plans: list[MethodPlan], backs: list[DragBackDataset],
            scores: pd.DataFrame, back_ids: list[str]) -> dict[str, Any]:
    out_dir, forward_ids, resamples, seed = run.out_dir, run.metric_ids, run.resamples, run.ci_seed
    settings = score_settings(plans, dataset, out_dir)
    for plan, back in zip(plans, backs):
        settings.update(score_settings([plan], back, out_dir))
    reasons = smoke_reasons(settings, plans)
    board = report_stage(out_dir, scores.drop(columns=["leg"]), forward_ids + back_ids, reasons,
                         resamples=resamples, ci_seed=seed)
    samples = {plan.key: len(dataset.sample_ids()) for plan in plans}
    table = drag_back_table(scores, forward_ids, back_ids, samples, resamples=resamples, seed=seed)
    folder = out_dir / "drag_back"
    atomic_write_bytes(folder / "table.csv", table.to_csv(index=False).encode())
    lines = ["# Drag-Back", "",
             "Each method drags, then drags its own output back (handles ⇄ targets, same mask and prompt); the round "
             "trip is scored against the original image (DragLoRA, protocols_2025.md §6.2). `n`: samples that "
             "completed the round trip; `missing`: samples whose forward or back edit failed.", ""]
    if reasons:
        lines += ["> **SMOKE RUN — these numbers mean nothing.** " + "; ".join(reasons), ""]
    lines += [markdown_table(display_table(table)), ""]
    atomic_write_bytes(folder / "table.md", "\n".join(lines).encode())
    print("\n" + markdown_table(display_table(table)) + "\n")
    print(f"drag-back: {folder / 'table.md'}")
    return {"leaderboard": board.board, "report": str(board.path), "drag_back_table": table, "drag_back_dir": str(folder)}
