"""The run lifecycle shared by a plain run (harness/cli.py) and an ablation sweep (harness/ablation.py).

A `Run` is made once per `python -m harness` process from the resolved config: it applies the process-wide
kernel and determinism settings (before anything touches CUDA), imports plugins, settles the stages (a shard
skips the report), pins its GPU and names its run file. It then owns what both kinds of run do alike: the
run record (`run.json`, "running" at the start and "finished" at the end, with the same fields), the edit
announcements, the reporting options and the report stage (whose bootstrap statistics are computed once and
reused by the HTML page).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd

from harness import determinism
from harness.data.base import Dataset
from harness.report.leaderboard import Leaderboard, markdown_table, report_stage
from harness.run_record import now, write_run_json
from harness.scaleout import job_slot, pin_gpu, run_file_name, shard_of
from harness.stats import RESAMPLES

log = logging.getLogger("harness")


class Run:
    """One run of the harness over a resolved config (a plain dict)."""

    def __init__(self, container: Mapping[str, Any]) -> None:
        self.config = dict(container)
        # First, before anything touches CUDA: cuBLAS reads its workspace setting once per process.
        determinism.configure_kernels(self.config)
        self.determinism = determinism.configure(bool(self.config.get("deterministic", False)))
        self.out_dir = Path(self.config["out_dir"]).expanduser().resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for module in self.config.get("plugins") or []:
            __import__(module)
        self.stages = list(self.config.get("stages") or ["edit", "score", "report"])
        index, count = shard_of(self.config)
        if count > 1 and "report" in self.stages:
            # A shard sees only its samples: run-level files come from one merge run over all shards (scaleout.py).
            self.stages.remove("report")
            print(f"[shard {index}/{count}] report skipped; after all shards: python -m harness stages=[score,report] "
                  "(same config, shard.count=1) merges them")
        if self.config.get("gpu_per_job", True):
            pin_gpu(job_slot(self.config))
        self.run_name = run_file_name(self.config)
        self.metric_ids = list(self.config.get("metrics") or [])
        options = dict(self.config.get("reporting") or {})
        self.resamples = int(options.get("bootstrap", RESAMPLES))
        self.ci_seed = int(options.get("ci_seed", 0))
        self.html = bool(options.get("html", True))
        self.gallery = int(options.get("gallery", 6))
        self.started: str | None = None
        self.weights: dict[str, Any] = {}
        self.stage_seconds: dict[str, float] = {}

    def start(self, dataset: Dataset, extra: Mapping[str, Any] | None = None, *, plans: Sequence[Any] = (),
              metric_ids: Sequence[str] | None = None) -> None:
        """After planning, before any work: check the weights the run's method `plans` and metrics
        (`metric_ids`, default the run's) will load against `weights.lock` (refuses with `WeightsError`,
        harness/models/weights.py), then record the run as running, with those weights' hashes."""
        from harness.models.weights import check_run

        metrics = list(self.metric_ids if metric_ids is None else metric_ids)
        self.weights = check_run({**self.config, "metrics": metrics}, list(plans))
        self.started = now()
        self._record(dataset, {"status": "running", **(extra or {})})

    def finish(self, dataset: Dataset, extra: Mapping[str, Any] | None = None) -> None:
        """Record the run as finished, with the stage wall clocks and `extra` (edit summary, timesteps, ...)."""
        self._record(dataset, {"status": "finished", "finished_at": now(), "stage_seconds": self.stage_seconds,
                               **(extra or {})})

    def _record(self, dataset: Dataset, fields: Mapping[str, Any]) -> None:
        write_run_json(self.out_dir, self.config, dataset, {"started_at": self.started, "determinism": self.determinism,
                                                            "weights": self.weights, **fields}, self.run_name)

    def add_stage_seconds(self, seconds: Mapping[str, float]) -> None:
        """Add one `edit_and_score` call's stage wall clocks (runs with several calls: ablations, drag-back)."""
        for stage, value in seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + value

    def announcer(self, summary: dict[str, Any], label: str = "", prefix: str = "") -> Callable[[dict[str, Any]], None]:
        """The edit stage's `on_edited`: prints one line per method variant and gathers its counts into
        `summary` (keyed `prefix + method key`); `label` names an ablation point in the lines."""
        def announce(edit_summary: dict[str, Any]) -> None:
            for key, info in edit_summary.items():
                summary[prefix + key] = info
                log.info("%s: %d samples, reused %d, edited %d, failed %d", info["method"], info["samples"],
                         info["reused"], info["edited"], info["failed"])
                print(f"[edit] {label + ' ' if label else ''}{info['method']}: reused {info['reused']} of "
                      f"{info['samples']} samples, edited {info['edited']}, failed {info['failed']}")
        return announce

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the block's wall clock to `stage_seconds[stage]` (run.json)."""
        clock = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - clock

    def report(self, scores: pd.DataFrame, reasons: list[str]) -> Leaderboard:
        """The report stage with this run's reporting options (the leaderboard files)."""
        return report_stage(self.out_dir, scores, self.metric_ids, reasons, resamples=self.resamples,
                            ci_seed=self.ci_seed)

    def print_leaderboard(self, leaderboard: Leaderboard) -> None:
        if leaderboard.reasons:
            print("\nSMOKE RUN: random-weight networks; the numbers below mean nothing.")
        print("\n" + markdown_table(leaderboard.board) + "\n")
        print(f"report: {leaderboard.path}")
