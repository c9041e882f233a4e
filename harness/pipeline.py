"""The three stages: edit → score → report, over one store — the names other code has imported from here.

The stages live in modules of one job each; this module only gathers their public names, so code written
against `harness.pipeline` keeps working. Nothing inside `harness/` imports it (tests/test_structure.py):

- planning (config errors, method/model/metric plans): harness/planning.py
- the edit stage (`EditJob`, `edit_stage`) and its sample order: harness/edit.py, harness/edit_order.py
- the score stage: harness/scoring.py; scoring during editing: harness/concurrent_scoring.py
- edit then score: harness/stages.py
- leaderboard files and tables: harness/report/leaderboard.py
- the run record: harness/run_record.py; the run lifecycle: harness/run.py
"""
from __future__ import annotations

from harness.edit import EditJob, check_output, edit_stage
from harness.edit_order import edit_order, sample_sizes, size_batches
from harness.planning import ConfigError, MethodPlan, plan_methods, plan_metrics, plan_model
from harness.report.leaderboard import interval_table, leaderboard, markdown_table, report_stage, variant_labels
from harness.run_record import collect_timesteps, now, score_settings, smoke_reasons, write_run_json
from harness.stages import StageResults, edit_and_score

__all__ = ["ConfigError", "EditJob", "MethodPlan", "StageResults", "check_output", "collect_timesteps",
           "edit_and_score", "edit_order", "edit_stage", "interval_table", "leaderboard", "markdown_table", "now",
           "plan_methods", "plan_metrics", "plan_model", "report_stage", "sample_sizes", "score_settings",
           "size_batches", "smoke_reasons", "variant_labels", "write_run_json"]
