"""`python -m harness`: compose the Hydra config from `conf/` and run edit → score → report."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.paths import CONF_DIR

log = logging.getLogger("harness")


def run(cfg: Any) -> dict[str, Any]:
    """Run the stages named in `cfg.stages` for a resolved config; returns a small summary."""
    from omegaconf import OmegaConf

    from harness import determinism
    from harness.data.base import open_dataset
    from harness.models.weights import check_run as check_run_weights
    from harness.scaleout import job_slot, pin_gpu, run_file_name, shard_of
    from harness.pipeline import (collect_timesteps, edit_and_score, now, plan_methods, plan_metrics, report_stage,
                                  score_settings, smoke_reasons, write_run_json)

    container = OmegaConf.to_container(cfg, resolve=True)
    # First, before anything touches CUDA: cuBLAS reads its workspace setting once per process.
    determinism.configure_kernels(container)
    determinism_state = determinism.configure(bool(container.get("deterministic", False)))
    out_dir = Path(container["out_dir"]).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for module in container.get("plugins") or []:
        __import__(module)
    stages = list(container.get("stages") or ["edit", "score", "report"])
    index, count = shard_of(container)
    if count > 1 and "report" in stages:
        # A shard sees only its samples: run-level files come from one merge run over all shards (scaleout.py).
        stages.remove("report")
        print(f"[shard {index}/{count}] report skipped; after all shards: python -m harness stages=[score,report] "
              "(same config, shard.count=1) merges them")
    if container.get("gpu_per_job", True):
        pin_gpu(job_slot(container))
    run_name = run_file_name(container)
    if container.get("ablation"):
        from harness.ablation import run_ablation

        return run_ablation(container, out_dir, stages, run_name)
    if container.get("drag_back"):
        from harness.drag_back import run_drag_back

        return run_drag_back(container, out_dir, stages, run_name)
    dataset = open_dataset(container["dataset"], container.get("shard"))
    # Plan everything before any work: unknown names and incompatible pairings fail here.
    plans = plan_methods(container.get("method") or {}, container["model"], dataset,
                         determinism.kernel_choices(container))
    metric_ids = list(container.get("metrics") or [])
    metric_classes = plan_metrics(metric_ids, dataset)
    # The weights on this machine against weights.lock (refuses before any work; harness/models/weights.py)
    weights = check_run_weights(container, plans)
    started = now()
    write_run_json(out_dir, container, dataset, {"status": "running", "started_at": started,
                                                 "determinism": determinism_state, "weights": weights}, run_name)

    summary: dict[str, Any] = {"out_dir": str(out_dir)}

    def announce(edit_summary: dict[str, Any]) -> None:
        for info in edit_summary.values():
            log.info("%s: %d samples, reused %d, edited %d, failed %d", info["method"], info["samples"],
                     info["reused"], info["edited"], info["failed"])
            print(f"[edit] {info['method']}: reused {info['reused']} of {info['samples']} samples, "
                  f"edited {info['edited']}, failed {info['failed']}")

    # wall clock per stage, model loading included (run.json `stage_seconds`)
    results = edit_and_score(container, dataset, out_dir, plans, metric_classes, stages, on_edited=announce)
    seconds = results.seconds
    if results.edit is not None:
        summary["edit"] = results.edit
    if results.scores is not None:
        scores, clock = results.scores, time.perf_counter()
        if "report" in stages:
            reasons = smoke_reasons(score_settings(plans, dataset, out_dir), plans)
            options = dict(container.get("reporting") or {})
            board, path = report_stage(out_dir, scores, metric_ids, reasons, resamples=int(options.get("bootstrap", 2000)),
                                       ci_seed=int(options.get("ci_seed", 0)))
            summary["leaderboard"] = board
            summary["report"] = str(path)
            if options.get("html", True):
                from harness.report.run_page import write_standard_page

                summary["html"] = str(write_standard_page(out_dir, dataset, plans, scores, board, metric_ids, reasons, options))
            from harness.pipeline import markdown_table

            if reasons:
                print("\nSMOKE RUN: random-weight networks; the numbers below mean nothing.")
            print("\n" + markdown_table(board) + "\n")
            print(f"report: {path}")
            seconds["report"] = time.perf_counter() - clock
    summary["stage_seconds"] = seconds
    write_run_json(out_dir, container, dataset, {"status": "finished", "started_at": started, "finished_at": now(),
                                                 "determinism": determinism_state, "weights": weights,
                                                 "stage_seconds": seconds,
                                                 "edit_summary": summary.get("edit"),
                                                 "scored_during_edit": results.scored_during_edit,
                                                 "timesteps_used": collect_timesteps(out_dir, dataset, plans)}, run_name)
    return summary


def main(argv: list[str] | None = None) -> None:
    import hydra

    from harness.config import check_group_choices
    from harness.registry import UnknownNameError

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:  # Hydra's own message for a missing group option is correct but suggests nothing
        check_group_choices(sys.argv[1:])
    except UnknownNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def _main(cfg: Any) -> None:
        from harness.data.base import DataError
        from harness.models.hub import WeightsNotFoundError
        from harness.models.weights import WeightsError
        from harness.pipeline import ConfigError

        try:
            run(cfg)
        except (ConfigError, UnknownNameError, DataError, WeightsError, WeightsNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    _main()


if __name__ == "__main__":
    main()
