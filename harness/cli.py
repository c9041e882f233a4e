"""`python -m harness`: compose the Hydra config from `conf/` and run edit → score → report."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from harness.paths import CONF_DIR

log = logging.getLogger("harness")


def run(cfg: Any) -> dict[str, Any]:
    """Run the stages named in `cfg.stages` for a resolved config; returns a small summary."""
    from omegaconf import OmegaConf

    from harness import determinism
    from harness.data.base import open_dataset
    from harness.planning import plan_methods, plan_metrics
    from harness.run import Run
    from harness.run_record import collect_timesteps, score_settings, smoke_reasons
    from harness.stages import edit_and_score

    run_ = Run(OmegaConf.to_container(cfg, resolve=True))
    container = run_.config
    if container.get("ablation"):
        from harness.ablation import run_ablation

        return run_ablation(run_)
    if container.get("drag_back"):
        from harness.drag_back import run_drag_back

        return run_drag_back(run_)
    dataset = open_dataset(container["dataset"], container.get("shard"))
    # Plan everything before any work: unknown names and incompatible pairings fail here.
    plans = plan_methods(container.get("method") or {}, container["model"], dataset,
                         determinism.kernel_choices(container))
    metric_classes = plan_metrics(run_.metric_ids, dataset)
    run_.start(dataset, plans=plans)

    summary: dict[str, Any] = {"out_dir": str(run_.out_dir)}
    edited: dict[str, Any] = {}
    # wall clock per stage, model loading included (run.json `stage_seconds`)
    results = edit_and_score(container, dataset, run_.out_dir, plans, metric_classes, run_.stages,
                             on_edited=run_.announcer(edited))
    run_.stage_seconds.update(results.seconds)
    if results.edit is not None:
        summary["edit"] = results.edit
    if results.scores is not None and "report" in run_.stages:
        with run_.timed("report"):
            reasons = smoke_reasons(score_settings(plans, dataset, run_.out_dir), plans)
            board = run_.report(results.scores, reasons)
            summary["leaderboard"], summary["report"] = board.board, str(board.path)
            if run_.html:
                from harness.report.run_page import write_standard_page

                summary["html"] = str(write_standard_page(run_.out_dir, dataset, plans, board, run_.gallery))
            run_.print_leaderboard(board)
    summary["stage_seconds"] = run_.stage_seconds
    run_.finish(dataset, {"edit_summary": summary.get("edit"), "scored_during_edit": results.scored_during_edit,
                          "timesteps_used": collect_timesteps(run_.out_dir, dataset, plans)})
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
        from harness.planning import ConfigError

        try:
            run(cfg)
        except (ConfigError, UnknownNameError, DataError, WeightsError, WeightsNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    _main()


if __name__ == "__main__":
    main()
