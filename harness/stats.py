"""Statistics behind every table cell: mean, seeded bootstrap 95% CI, n and failures; paired comparisons.

Intervals are percentile bootstraps over *samples* (`scipy.stats.bootstrap`, `method="percentile"`):
the benchmark's unit of replication is the image, so a weighted metric (`md_dift@dragdiffusion`, pooled
over all points) is resampled image by image with its weights, which gives the interval of the pooled
ratio. The percentile method is used rather than BCa because BCa breaks down on the degenerate cells
every leaderboard has (the identity row's LPIPS is exactly 0 on every sample) and on tiny sets.

Every interval is seeded from a fixed seed plus the cell's name (`cell_seed`), so a table renders the same
intervals every time and a cell's interval does not depend on which other cells are in the table.
A paired comparison resamples the samples both methods scored, keeping each sample's two values
together, which is far tighter than comparing two independent intervals.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.metrics.base import reducer, weighted_mean

RESAMPLES = 2000
LEVEL = 0.95
Reduce = Callable[..., Any]  # Metric.reduce: (values, weights, axis=-1) -> reduced along axis


@dataclass(frozen=True)
class CellStats:
    """One table cell: the (weighted) mean over samples, its bootstrap interval, samples scored, failures."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    failed: int = 0


@dataclass(frozen=True)
class PairedStats:
    """Mean difference a − b over the samples both scored, with its paired bootstrap interval."""

    diff: float
    ci_low: float
    ci_high: float
    n: int


def cell_seed(seed: int, *parts: Any) -> int:
    """A seed for one cell: `seed` mixed with a stable hash of the cell's name (crc32, not the salted hash())."""
    return (int(seed) * 1_000_003 + zlib.crc32("\x1f".join(map(str, parts)).encode())) % 2 ** 32


def _interval(data: tuple[np.ndarray, ...], statistic: Any, resamples: int, level: float, seed: int) -> tuple[float, float]:
    n = len(data[0])
    if n < 2:
        return float("nan"), float("nan")
    if all(np.all(d == d[0]) for d in data):  # every resample is the sample itself
        value = float(statistic(*[d[None] for d in data], axis=-1)[0])
        return value, value
    result = sps.bootstrap(data, statistic, n_resamples=resamples, paired=True, vectorized=True,
                           confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_ci(values: Sequence[float], weights: Sequence[float] | None = None, *, failed: int = 0,
            resamples: int = RESAMPLES, seed: int = 0, reduce: Reduce = weighted_mean) -> CellStats:
    """`reduce(values, weights)` of the finite `values` (the weighted mean by default; weights 1 if none are
    given) with a percentile-bootstrap interval: pass the metric's own `Metric.reduce`.

    NaN values (metric failures) are dropped; fewer than two values give a NaN interval.
    """
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    keep = np.isfinite(v) & np.isfinite(w)
    v, w = v[keep], w[keep]
    if len(v) == 0:
        return CellStats(float("nan"), float("nan"), float("nan"), 0, failed)
    mean = float(reduce(v, w))
    low, high = _interval((v, w), reduce, resamples, LEVEL, seed)
    return CellStats(mean, low, high, int(len(v)), failed)


def paired_difference(a: pd.Series, b: pd.Series, weights_a: pd.Series | None = None,
                      weights_b: pd.Series | None = None, *, resamples: int = RESAMPLES, seed: int = 0,
                      reduce: Reduce = weighted_mean) -> PairedStats:
    """`reduce` (the metric's; the weighted mean by default) of `a` minus that of `b` over the sample ids
    (the Series index) both have finite values for, with a paired percentile-bootstrap interval (samples
    resampled jointly)."""
    frame = pd.DataFrame({"a": a, "b": b,
                          "wa": 1.0 if weights_a is None else weights_a,
                          "wb": 1.0 if weights_b is None else weights_b}).dropna()
    frame = frame[np.isfinite(frame.to_numpy(dtype=float)).all(axis=1)]
    if frame.empty:
        return PairedStats(float("nan"), float("nan"), float("nan"), 0)
    data = tuple(frame[c].to_numpy(dtype=float) for c in ("a", "wa", "b", "wb"))

    def statistic(va: np.ndarray, wa: np.ndarray, vb: np.ndarray, wb: np.ndarray, axis: int = -1) -> np.ndarray:
        return reduce(va, wa, axis) - reduce(vb, wb, axis)

    diff = float(statistic(*data))
    low, high = _interval(data, statistic, resamples, LEVEL, seed)
    return PairedStats(diff, low, high, int(len(frame)))


def score_stats(scores: pd.DataFrame, metric_ids: Sequence[str], *, resamples: int = RESAMPLES,
                seed: int = 0) -> pd.DataFrame:
    """Long table of cell statistics from per-sample score rows (columns of `scoring.score_stage`):
    one row per dataset × method_key × metric with mean, ci_low, ci_high, n and failed.

    Each cell is the metric's own `reduce` (`harness.metrics.base.reducer`: the plain mean for
    metric ids this checkout does not know, e.g. from a store written by a newer checkout).
    """

    rows = []
    columns = ["dataset", "method", "method_key", "metric", "mean", "ci_low", "ci_high", "n", "failed"]
    for (dataset, method, key), df in scores.groupby(["dataset", "method", "method_key"], sort=True):
        failed = int(df.loc[df["status"] == "failed", "sample_id"].nunique())
        for metric_id in metric_ids:
            cell = df[(df["metric"] == metric_id) & (df["status"] == "ok")]
            s = mean_ci(cell["value"], cell["weight"], failed=failed, resamples=resamples,
                        seed=cell_seed(seed, dataset, key, metric_id), reduce=reducer(metric_id))
            rows.append([dataset, method, key, metric_id, s.mean, s.ci_low, s.ci_high, s.n, s.failed])
    return pd.DataFrame(rows, columns=columns)
