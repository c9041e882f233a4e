"""VFD-Bench loader (protocols_2025.md §6.5): the real 6-sample subset, fixtures for the format's edge cases
(missing ground truth, size mismatch, points outside), the `points` option and relative roots."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.data.base import DataError, open_dataset
from harness.data.describe import describe
from tests.conftest import shared_path
from tests.dataset_fixtures import gradient_image, write_image, write_vfd_sample


def open_vfd(root, **options):
    return open_dataset({"name": "vfd_bench", "root": str(root), **options})


@pytest.mark.integration
def test_real_subset_describes_and_loads_with_ground_truth():
    root = shared_path("data", "vfd-bench")
    stats, errors = describe(open_vfd(root))
    assert errors == []
    assert stats["samples"] == 6 and stats["pairs"] == 6
    assert stats["with_ground_truth"] == 6 and stats["ground_truth_share"] == 1.0
    flow, _ = describe(open_vfd(root, points="flowdrag"))
    assert flow["pairs"] == 27  # 4 + 4 + 6 + 4 + 5 + 4 pairs in points_flowdrag.json
    ds = open_vfd(root)
    deer = ds.load("vfd_bench/all/Pexels_12689563_Deer_head_rotation_1")
    assert deer.prompt == "a deer standing in a field of tall grass"
    assert deer.handles.tolist() == [[235, 171]] and deer.targets.tolist() == [[298, 167]]
    assert deer.ground_truth.shape == deer.image.shape == (512, 512, 3)
    assert not np.array_equal(deer.ground_truth, deer.image)
    assert 0 < deer.mask.mean() < 1


@pytest.mark.integration
def test_relative_root_works(monkeypatch):
    root = shared_path("data", "vfd-bench")
    monkeypatch.chdir(root.parent.parent)  # /…/shared
    ds = open_vfd(os.path.join("data", "vfd-bench"))
    stats, errors = describe(ds)
    assert errors == [] and stats["samples"] == 6
    assert ds.load(ds.sample_ids()[0]).ground_truth is not None


def test_fixture_round_trip_options_and_share(tmp_path: Path, monkeypatch):
    write_vfd_sample(tmp_path / "a")
    write_vfd_sample(tmp_path / "b", truth=False)
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    stats, errors = describe(open_vfd(tmp_path))
    assert errors == [] and stats["samples"] == 2 and stats["pairs"] == 2
    assert stats["with_ground_truth"] == 1 and stats["ground_truth_share"] == 0.5
    ds = open_vfd(tmp_path, points="flowdrag")
    a = ds.load("vfd_bench/all/a")
    assert a.handles.tolist() == [[12, 12], [30, 30], [10, 20]] and a.targets.tolist() == [[20, 16], [34, 33], [14, 22]]
    assert np.array_equal(a.ground_truth, gradient_image(64, 48, 3))
    assert ds.load("vfd_bench/all/b").ground_truth is None
    # the fingerprint follows the chosen point file
    assert ds.loader.fingerprint("vfd_bench/all/a") != open_vfd(tmp_path).loader.fingerprint("vfd_bench/all/a")
    monkeypatch.chdir(tmp_path.parent)  # relative root, fixture
    assert open_vfd(tmp_path.name).load("vfd_bench/all/a").ground_truth is not None


def test_malformed_samples_name_file_and_field(tmp_path: Path):
    write_vfd_sample(tmp_path / "small_gt")
    write_image(tmp_path / "small_gt" / "gt.png", gradient_image(32, 48))
    write_vfd_sample(tmp_path / "outside", points=[[12, 12], [90, 16]])
    write_vfd_sample(tmp_path / "rgba")
    write_image(tmp_path / "rgba" / "gt.png", np.zeros((48, 64, 4), np.uint8))
    ds = open_vfd(tmp_path)
    with pytest.raises(DataError, match=r"small_gt/gt.png: field 'ground truth': 32x48, but input.png is 64x48"):
        ds.load("vfd_bench/all/small_gt")
    with pytest.raises(DataError, match=r"outside/points.json: field 'points'\[1\] = \[90, 16\] lies outside"):
        ds.load("vfd_bench/all/outside")
    with pytest.raises(DataError, match=r"rgba/gt.png: field 'ground truth': an image with an alpha channel"):
        ds.load("vfd_bench/all/rgba")
    with pytest.raises(DataError, match="points must be one of"):
        open_vfd(tmp_path, points="flow")


@pytest.mark.parametrize("relative", [False, True])
def test_symlinked_ground_truth_outside_root_is_refused(tmp_path: Path, monkeypatch, relative: bool):
    """With a relative root too: the containment check must not join the root twice and pass vacuously."""
    root = tmp_path / "root"
    write_vfd_sample(root / "a")
    (root / "a" / "gt.png").unlink()
    write_image(tmp_path / "elsewhere.png", gradient_image(64, 48))
    (root / "a" / "gt.png").symlink_to(tmp_path / "elsewhere.png")
    if relative:
        monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="outside the dataset root"):
        open_vfd("root" if relative else root).load("vfd_bench/all/a")


@pytest.mark.integration
def test_harness_run_on_vfd_bench_scores_the_ground_truth_metrics(tmp_path: Path):
    """`python -m harness dataset=vfd_bench dataset.root=<abs>` with the fast methods on one sample and the
    ground-truth metrics (the DIFT metrics of `metric_set=vfd` are left to the by-hand run: minutes on CPU):
    no failure, every metric scored, and identity's PSNR against the truth equals the source's."""
    import pandas as pd
    from omegaconf import OmegaConf

    from harness.cli import run
    from harness.config import compose
    from harness.metrics.ground_truth import psnr_uint8

    root = shared_path("data", "vfd-bench")
    metrics = "[psnr_gt@vfd,lpips_alex_gt@vfd,if_gt@vfd,clip_gt@vfd,lpips_alex@dragdiffusion,time]"
    cfg = compose(["dataset=vfd_bench", f"dataset.root={root}", "dataset.limit=1", f"metrics={metrics}",
                   "method=[identity,copy_paste]", "reporting.html=false", "reporting.bootstrap=50"])
    cfg["out_dir"] = str(tmp_path)
    run(OmegaConf.create(cfg))
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert set(scores["status"]) == {"ok"}
    assert {"psnr_gt@vfd", "lpips_alex_gt@vfd", "if_gt@vfd", "clip_gt@vfd", "lpips_alex@dragdiffusion"} <= set(scores["metric"])
    sample = open_vfd(root).load(scores["sample_id"].iloc[0])
    identity = scores[(scores["method"] == "identity") & (scores["metric"] == "psnr_gt@vfd")]["value"].iloc[0]
    assert identity == pytest.approx(psnr_uint8(sample.ground_truth, sample.image))
