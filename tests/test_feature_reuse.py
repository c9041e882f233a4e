"""Source-feature reuse (`features.source_cache`, harness/metrics/source_cache.py): a score is bit-identical
whether its source's DIFT features came from the memory cache, the disk cache or a fresh pass, and the
source is featurised once per protocol however many edits of it are scored."""
from __future__ import annotations

import numpy as np
import pytest

from harness.metrics.base import MetricContext
from harness.metrics.md_dift import MdDiftDragDiffusion, MdDiftRegionDrag
from harness.metrics.source_cache import shared_cache
from harness.types import DragSample


def _sample_and_edits(k: int = 2):
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    edits = [np.roll(source, shift, axis=1) for shift in range(1, k + 1)]
    sample = DragSample(sample_id="s", image=source, mask=np.ones((64, 80), bool), prompt="a cat",
                        handles=np.array([[20.0, 30.0]]), targets=np.array([[28.0, 30.0]]))
    return sample, edits


@pytest.fixture
def cached_features(smoke_features, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path))
    return {**smoke_features, "source_cache": True}


@pytest.mark.parametrize("cls", [MdDiftDragDiffusion, MdDiftRegionDrag])
def test_scores_identical_with_and_without_a_cached_source(cls, cached_features, tmp_path, monkeypatch):
    sample, edits = _sample_and_edits()
    warm = MetricContext(cached_features, device="cpu")
    first = [cls(warm).compute(sample, e, {}).value for e in edits]  # the first fills the cache, the rest hit it
    assert shared_cache(warm).hits == {"memory": len(edits) - 1, "disk": 0, "miss": 1}
    for i, edit in enumerate(edits):  # a fresh context per score: the source from the disk cache
        disk = MetricContext(cached_features, device="cpu")
        assert cls(disk).compute(sample, edit, {}).value == first[i]
        assert shared_cache(disk).hits["disk"] == 1
    for i, edit in enumerate(edits):  # nothing cached: every score featurises its own source
        monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path / f"cold{i}"))
        cold = MetricContext(cached_features, device="cpu")
        assert cls(cold).compute(sample, edit, {}).value == first[i]
        assert shared_cache(cold).hits["miss"] == 1


def test_cache_is_opt_in_and_keeps_the_default_score_keys(smoke_features):
    plain = MetricContext(smoke_features, device="cpu")
    off = MetricContext({**smoke_features, "source_cache": False}, device="cpu")
    on = MetricContext({**smoke_features, "source_cache": True}, device="cpu")
    assert plain.key == off.key != on.key
    sample, edits = _sample_and_edits(1)
    MdDiftRegionDrag(off).compute(sample, edits[0], {})
    assert ("source_features",) not in off._cache


def test_key_changes_with_image_prompt_and_protocol(cached_features):
    from harness.metrics.source_cache import source_key

    sample, _ = _sample_and_edits(1)
    ctx = MetricContext(cached_features, device="cpu")
    a, b = MdDiftRegionDrag(ctx), MdDiftDragDiffusion(ctx)
    base = source_key(a, sample.image, "a cat", {})
    assert base == source_key(a, sample.image.copy(), "a cat", {})
    assert len({base, source_key(a, sample.image, "a dog", {}), source_key(b, sample.image, "a cat", {}),
                source_key(a, 255 - sample.image, "a cat", {})}) == 4
