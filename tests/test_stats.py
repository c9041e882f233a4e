"""Bootstrap intervals against known distributions; paired comparisons; leaderboard interval columns."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.stats import cell_seed, mean_ci, paired_difference, score_stats


def test_large_normal_sample_interval_matches_the_normal_theory():
    rng = np.random.default_rng(7)
    n, sigma = 20_000, 2.0
    x = rng.normal(3.0, sigma, n)
    s = mean_ci(x, resamples=2000, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(n)
    assert s.mean == pytest.approx(x.mean())
    assert s.n == n
    # Monte-Carlo error of the 2.5%/97.5% percentiles with 2000 resamples is a few percent of the half-width.
    assert s.ci_low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert s.ci_high == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_coverage_of_the_normal_mean_over_many_seeds():
    """The 95% interval contains the true mean in about 95% of repeated experiments (n = 40 per experiment)."""
    hits, trials = 0, 300
    for seed in range(trials):
        x = np.random.default_rng(1000 + seed).normal(0.0, 1.0, 40)
        s = mean_ci(x, resamples=1000, seed=seed)
        hits += s.ci_low <= 0.0 <= s.ci_high
    # percentile bootstrap undercovers slightly at n = 40 (~0.93); binomial sd at 300 trials ~0.013
    assert 0.89 <= hits / trials <= 0.98


def test_intervals_are_seeded_and_deterministic():
    x = np.random.default_rng(0).exponential(1.0, 50)
    assert mean_ci(x, seed=3) == mean_ci(x, seed=3)
    assert mean_ci(x, seed=3) != mean_ci(x, seed=4)
    assert cell_seed(0, "demo", "identity-1", "time") == cell_seed(0, "demo", "identity-1", "time")
    assert cell_seed(0, "demo", "identity-1", "time") != cell_seed(0, "demo", "identity-2", "time")


def test_small_degenerate_and_failed_cells():
    assert mean_ci([0.0, 0.0, 0.0]).ci_low == 0.0 == mean_ci([0.0, 0.0, 0.0]).ci_high  # identity LPIPS
    one = mean_ci([2.5])
    assert one.mean == 2.5 and np.isnan(one.ci_low) and one.n == 1
    empty = mean_ci([], failed=3)
    assert np.isnan(empty.mean) and empty.n == 0 and empty.failed == 3
    assert mean_ci([1.0, np.nan, 3.0]).n == 2  # metric failures are dropped


def test_weighted_mean_resamples_images_with_their_weights():
    """A pooled metric (weights = points per image) gets the interval of the pooled ratio."""
    values = np.array([10.0, 20.0, 30.0, 40.0])
    weights = np.array([1.0, 1.0, 1.0, 5.0])
    s = mean_ci(values, weights, resamples=4000, seed=0)
    assert s.mean == pytest.approx((10 + 20 + 30 + 200) / 8)
    assert 10.0 <= s.ci_low < s.mean < s.ci_high <= 40.0


def test_paired_difference_recovers_a_known_shift_far_tighter_than_unpaired():
    rng = np.random.default_rng(5)
    ids = [f"demo/x/{i}" for i in range(60)]
    base = pd.Series(rng.normal(0, 1, 60), index=ids)  # large between-sample spread
    other = base + 0.3 + pd.Series(rng.normal(0, 0.05, 60), index=ids)
    d = paired_difference(other, base, seed=0)
    assert d.n == 60 and d.diff == pytest.approx(0.3, abs=0.03)
    assert d.ci_low < 0.3 < d.ci_high and d.ci_high - d.ci_low < 0.05
    unpaired = mean_ci(other.to_numpy(), seed=0)
    assert unpaired.ci_high - unpaired.ci_low > 5 * (d.ci_high - d.ci_low)
    # only shared, finite samples count
    partial = paired_difference(other.iloc[:50], base.drop(ids[0]))
    assert partial.n == 49


def test_score_stats_long_table():
    rows = []
    for method, shift in (("identity", 0.0), ("copy_paste", 1.0)):
        for i in range(5):
            rows.append({"dataset": "demo", "method": method, "method_key": f"{method}-k", "sample_id": f"demo/s/{i}",
                         "metric": "time", "value": i + shift, "weight": 1.0, "status": "ok"})
    rows.append({"dataset": "demo", "method": "identity", "method_key": "identity-k", "sample_id": "demo/s/9",
                 "metric": None, "value": np.nan, "weight": 0.0, "status": "failed"})
    stats = score_stats(pd.DataFrame(rows), ["time"], resamples=500).set_index("method")
    assert stats.loc["identity", "mean"] == pytest.approx(2.0) and stats.loc["identity", "failed"] == 1
    assert stats.loc["copy_paste", "mean"] == pytest.approx(3.0) and stats.loc["copy_paste", "n"] == 5
    assert (stats["ci_low"] < stats["mean"]).all() and (stats["mean"] < stats["ci_high"]).all()
