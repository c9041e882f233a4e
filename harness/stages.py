"""Stage composition: the edit stage and then the score stage, with scoring during editing when it pays."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from harness.concurrent_scoring import ConcurrentScorer, wanted as scoring_during_edit_wanted
from harness.data.base import Dataset
from harness.edit import edit_stage
from harness.metrics.base import Metric
from harness.planning import MethodPlan
from harness.scoring import score_stage


@dataclass
class StageResults:
    """What `edit_and_score` ran: the edit summary per method key, the score rows, wall-clock seconds per
    stage (model loading included) and, when scoring ran during editing, how many samples it scored then."""

    edit: dict[str, Any] | None = None
    scores: pd.DataFrame | None = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    scored_during_edit: dict[str, int] | None = None


def edit_and_score(cfg: Mapping[str, Any], dataset: Dataset, out_dir: Path, plans: list[MethodPlan],
                   metric_classes: list[type[Metric]], stages: Iterable[str],
                   on_edited: Callable[[dict[str, Any]], None] | None = None) -> StageResults:
    """The edit stage and then the score stage, as far as `stages` asks (the report needs the scores).
    With `score_during_edit` in effect (harness/concurrent_scoring.py) the samples are scored as they are
    stored; the score stage then reads their cached values, and its seconds include waiting for the scorer
    to finish. `on_edited(summary)` is called as soon as editing ends."""
    stages = list(stages)
    results = StageResults()
    clock = time.perf_counter()
    with contextlib.ExitStack() as scoring_during_edit:
        scorer = None
        if "edit" in stages and scoring_during_edit_wanted(cfg, stages, metric_classes):
            scorer = scoring_during_edit.enter_context(ConcurrentScorer(cfg, dataset, metric_classes))
        if "edit" in stages:
            results.edit = edit_stage(cfg, dataset, out_dir, plans, scorer)
            results.seconds["edit"], clock = time.perf_counter() - clock, time.perf_counter()
            if on_edited is not None:
                on_edited(results.edit)
    if scorer is not None:
        results.scored_during_edit = {"scored": scorer.scored, "failed": scorer.failed}
    if "score" in stages or "report" in stages:
        results.scores = score_stage(cfg, dataset, out_dir, plans, metric_classes,
                                     scorer.context if scorer is not None else None)
        results.seconds["score"] = time.perf_counter() - clock
    return results
