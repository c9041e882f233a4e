"""Drag-format loaders: the real DragBench-D and Drag100 subsets, fixtures for DragBench-S/-DR/-SR, strict
validation of malformed samples, and the shared dataset options (filters, order, shards, point fraction)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.data.base import DataError, open_dataset
from harness.data.describe import describe
from harness.types import DragSample
from tests.conftest import shared_path
from tests.dataset_fixtures import (box_mask, dragbench_meta, gradient_image, region_meta, write_dragbench_s_sample,
                                    write_dragbench_sample, write_dragbench_tree, write_drag100_sample, write_image,
                                    write_json)


def open_(name, root, **options):
    return open_dataset({"name": name, "root": str(root), **options})


# --- the real subsets (datasets.md §1) --------------------------------------------------------------

@pytest.mark.integration
def test_dragbench_d_subset_loads_and_describes_as_documented():
    root = shared_path("data", "dragbench-d")
    ds = open_("dragbench_d", root)
    stats, errors = describe(ds)
    assert errors == []
    assert stats["samples"] == 20 and stats["pairs"] == 32
    assert stats["categories"] == {c: 2 for c in [
        "animals", "art_work", "building_city_view", "building_countryside_view", "human_full_body",
        "human_head", "human_upper_body", "interior_design", "land_scape", "other_objects"]}
    assert stats["image_sizes"] == {"512x512": 6, "512x768": 6, "512x341": 3, "512x340": 1, "512x389": 1,
                                    "512x511": 1, "512x682": 1, "512x684": 1}
    assert stats["points_per_sample"] == {"2": 11, "4": 6, "6": 3}
    samples = {s.sample_id: s for s in ds}
    assert len(samples) == 20
    boat = samples["dragbench_d/art_work/PJC_2023-09-15-1549-43"]
    assert boat.prompt == "An oil painting of people in a boat on a river " and boat.size == (512, 389)
    assert boat.category == "art_work" and boat.dense_handles is None
    coverage = [s.mask.mean() for s in samples.values()]
    assert 0.016 < min(coverage) < 0.018 and 0.626 < max(coverage) < 0.628  # 1.7 %–62.7 %
    for s in samples.values():
        assert s.image.dtype == np.uint8 and s.image.shape == (s.size[1], s.size[0], 3)
        assert s.mask.shape == s.image.shape[:2] and s.mask.dtype == bool
    assert len({ds.loader.fingerprint(i) for i in samples}) == 20


@pytest.mark.integration
def test_drag100_subset_loads_and_describes_as_documented():
    ds = open_("drag100", shared_path("data", "drag100"))
    stats, errors = describe(ds, verify=True)
    assert errors == [] and stats["verified_pixels"]
    assert stats["samples"] == 10 and stats["pairs"] == 30 and stats["categories"] == {"all": 10}
    assert stats["points_per_sample"] == {"2": 3, "4": 4, "6": 1, "16": 2}
    assert stats["image_sizes"]["512x512"] == 3 and stats["image_sizes"]["512x919"] == 1
    cat = ds.load("drag100/all/cat_2")
    assert cat.prompt == "" and cat.size == (512, 512)
    np.testing.assert_array_equal(cat.handles, [[147, 67], [410, 88]])
    np.testing.assert_array_equal(cat.targets, [[202, 46], [336, 54]])
    assert cat.mask.mean() == pytest.approx(0.237, abs=0.001)


@pytest.mark.integration
def test_regions_from_points_on_the_real_subset():
    ds = open_("dragbench_d", shared_path("data", "dragbench-d"), regions="from_points",
               ids=["animals/JH_2023-09-14-1825-41"])
    (sample,) = list(ds)
    assert sample.dense_handles is not None and len(sample.dense_handles) > 100
    assert (sample.dense_handles % 8 == 0).all() and (sample.dense_targets % 8 == 0).all()
    w, h = sample.size
    assert (sample.dense_targets >= 0).all() and (sample.dense_targets[:, 0] < w).all()
    assert (sample.dense_targets[:, 1] < h).all()
    assert sample.editing_mask is sample.mask  # the point mask is the editing mask


@pytest.mark.integration
def test_harness_runs_end_to_end_on_dragbench_d(tmp_path):
    from omegaconf import OmegaConf

    from harness.cli import run
    from harness.config import compose

    root = shared_path("data", "dragbench-d")
    cfg = compose(["dataset=dragbench_d", f"dataset.root={root}", "method=[identity]", "metrics=[time]",
                   "dataset.ids=[animals/JH_2023-09-14-1825-41,land_scape/PJC_2023-09-15-1637-01]"])
    cfg["out_dir"] = str(tmp_path / "run")
    summary = run(OmegaConf.create(cfg))
    (info,) = summary["edit"].values()
    assert info["edited"] == 2 and info["failed"] == 0
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert sorted(run_json["dataset"]["samples"]) == ["dragbench_d/animals/JH_2023-09-14-1825-41",
                                                      "dragbench_d/land_scape/PJC_2023-09-15-1637-01"]
    assert all(len(v) == 16 for v in run_json["dataset"]["samples"].values())
    assert (tmp_path / "run" / "leaderboard.csv").exists()


# --- DragBench-D fixtures: layout, noise files, validation -----------------------------------------

def test_dragbench_fixture_ignores_noise_and_keeps_odd_heights(tmp_path):
    root = write_dragbench_tree(tmp_path / "dragbench")
    ds = open_("dragbench_d", root)
    assert ds.sample_ids() == ["dragbench_d/animals/JH_2023-09-14-1825-41",
                               "dragbench_d/art_work/PJC_2023-09-15-1052-01",
                               "dragbench_d/art_work/PJC_2023-09-15-1549-43"]
    sample = ds.load(ds.sample_ids()[0])
    assert isinstance(sample, DragSample) and sample.size == (64, 43) and sample.prompt == "prompt 0 "
    np.testing.assert_array_equal(sample.handles, [[10, 12], [30, 30]])
    np.testing.assert_array_equal(sample.targets, [[20, 14], [40, 28]])
    np.testing.assert_array_equal(sample.mask, box_mask(64, 43, (4, 4, 48, 40)).astype(bool))
    stats, errors = describe(ds)
    assert errors == [] and stats["categories"] == {"animals": 1, "art_work": 2}
    assert stats["image_sizes"] == {"64x43": 1, "64x64": 1, "72x48": 1} and stats["pairs"] == 6


def _meta(**changes):
    meta = dragbench_meta()
    meta.update(changes)
    return meta


@pytest.mark.parametrize("meta,pattern", [
    (_meta(points=[[10, 12], [20, 14], [30, 30]]), r"field 'points' has an odd number of points \(3\)"),
    (_meta(points=[[10, 12], [64, 14]]), r"field 'points'\[1\] = \[64, 14\] lies outside the 64x43 image"),
    (_meta(points=[[10, 12], [20, -1]]), r"field 'points'\[1\] = \[20, -1\] lies outside"),
    (_meta(points=[[10.5, 12], [20, 14]]), r"field 'points'\[0\] must be an \[x, y\] pair of integers"),
    (_meta(points=[]), r"field 'points' is empty"),
    (_meta(mask=box_mask(64, 44, (4, 4, 48, 40))), r"field 'mask' has shape \(44, 64\), but original_image\.png is 64x43"),
    (_meta(mask=np.zeros((43, 64), np.uint8)), r"field 'mask' is empty"),
    (_meta(mask=box_mask(64, 43, (4, 4, 48, 40), 7)), r"field 'mask' must be binary"),
    (_meta(mask=box_mask(64, 43, (4, 4, 48, 40)).astype(np.float32)), r"field 'mask' must be uint8"),
    (_meta(prompt=3), r"field 'prompt' must be a string"),
    ({"prompt": "x", "points": [[1, 1], [2, 2]]}, r"missing field\(s\) \['mask'\]"),
    (_meta(extra=1), r"unexpected field\(s\) \['extra'\]"),
    ([1, 2, 3], r"expected a dict"),
])
def test_malformed_dragbench_samples_name_file_and_field(tmp_path, meta, pattern):
    root = tmp_path / "dragbench"
    write_dragbench_sample(root / "animals" / "good", meta=dragbench_meta())
    write_dragbench_sample(root / "animals" / "bad", meta=meta)
    ds = open_("dragbench_d", root)
    with pytest.raises(DataError, match=r"animals/bad/meta_data\.pkl: " + pattern):
        ds.load("dragbench_d/animals/bad")
    ds.load("dragbench_d/animals/good")
    stats, errors = describe(ds)  # describe reports the bad sample and still counts the good one
    assert stats["samples"] == 1 and len(errors) == 1 and "animals/bad/meta_data.pkl" in errors[0]


def test_image_problems_in_a_sample(tmp_path):
    root = tmp_path / "dragbench"
    write_dragbench_sample(root / "a" / "palette")
    (root / "a" / "palette" / "original_image.png").unlink()
    from PIL import Image

    Image.fromarray(gradient_image(64, 43)).convert("P").save(root / "a" / "palette" / "original_image.png")
    write_dragbench_sample(root / "a" / "missing")
    (root / "a" / "missing" / "original_image.png").unlink()
    write_dragbench_sample(root / "a" / "truncated")
    png = root / "a" / "truncated" / "original_image.png"
    png.write_bytes(png.read_bytes()[:200])
    ds = open_("dragbench_d", root)
    with pytest.raises(DataError, match=r"palette/original_image\.png: field 'original_image\.png': a palette image"):
        ds.load("dragbench_d/a/palette")
    with pytest.raises(DataError, match=r"missing/original_image\.png: field 'original_image\.png': file not found"):
        ds.load("dragbench_d/a/missing")
    with pytest.raises(DataError, match=r"truncated/original_image\.png: .*cannot be decoded"):
        ds.load("dragbench_d/a/truncated")
    # describe reads headers only; --verify decodes and finds the truncated file too
    assert len(describe(ds)[1]) == 2
    assert len(describe(ds, verify=True)[1]) == 3


def test_malicious_annotation_in_a_dataset_is_refused(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'marker'}",))

    root = tmp_path / "dragbench"
    write_dragbench_sample(root / "a" / "evil", meta={"prompt": Evil(), "points": [], "mask": None})
    ds = open_("dragbench_d", root)
    with pytest.raises(DataError, match=r"evil/meta_data\.pkl: refusing to unpickle global"):
        ds.load("dragbench_d/a/evil")
    assert not (tmp_path / "marker").exists()


def test_describe_reads_no_pixels(tmp_path, monkeypatch):
    import harness.data.folders as folders

    root = write_dragbench_tree(tmp_path / "dragbench")
    monkeypatch.setattr(folders, "read_image", lambda *a, **k: pytest.fail("describe decoded an image"))
    stats, errors = describe(open_("dragbench_d", root))
    assert errors == [] and stats["samples"] == 3


def test_empty_or_wrong_roots(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no samples under .*empty \(expected <category>/<sample>/meta_data\.pkl\)"):
        open_("dragbench_d", tmp_path / "empty").sample_ids()
    with pytest.raises(DataError, match="is not a directory"):
        open_("dragbench_d", tmp_path / "nope").sample_ids()
    with pytest.raises(DataError, match="no root given"):
        open_dataset({"name": "dragbench_d", "root": "???"}).sample_ids()
    with pytest.raises(DataError, match=r"unknown option\(s\) \['region'\]; valid options: regions"):
        open_("dragbench_d", tmp_path, region="from_points")
    with pytest.raises(DataError, match=r"regions must be one of \['none', 'from_points'\]"):
        open_("dragbench_d", tmp_path, regions="file")


# --- DragBench-DR / -SR ------------------------------------------------------------------------------

def test_dragbench_dr_edits_with_regions_and_scores_with_points(tmp_path):
    root = write_dragbench_tree(tmp_path / "dr", region=True)
    ds = open_("dragbench_dr", root)
    sample = ds.load("dragbench_dr/art_work/PJC_2023-09-15-1052-01")
    np.testing.assert_array_equal(sample.handles, [[10, 12], [30, 30]])  # meta_data.pkl
    np.testing.assert_array_equal(sample.dense_handles, [[8, 8], [16, 8], [8, 16], [16, 16]])  # region file
    np.testing.assert_array_equal(sample.dense_targets, sample.dense_handles + [8, 0])
    np.testing.assert_array_equal(sample.edit_handles, sample.dense_handles)
    assert sample.edit_mask.all() and not sample.mask.all()  # the region file's mask drives the edit
    assert sample.editing_mask is sample.edit_mask
    stats, errors = describe(ds)
    assert errors == [] and stats["pairs"] == 6 and stats["dense_pairs"] == 12
    # the same tree as point-only data, and with regions synthesised from the points
    assert open_("dragbench_dr", root, regions="none").load(sample.sample_id).dense_handles is None
    synth = open_("dragbench_dr", root, regions="from_points").load(sample.sample_id)
    assert synth.edit_mask is None and len(synth.dense_handles) > 4


def test_dragbench_sr_is_flat_and_region_files_are_validated(tmp_path):
    root = write_dragbench_tree(tmp_path / "sr", region=True, nested=False)
    ds = open_("dragbench_sr", root)
    assert ds.sample_ids() == ["dragbench_sr/all/art_0", "dragbench_sr/all/lion_12", "dragbench_sr/all/sunset"]
    assert len(ds.load("dragbench_sr/all/sunset").dense_handles) == 4
    bad = region_meta((64, 64))
    bad["points"] = bad["points"][:-1]
    write_dragbench_sample(root / "odd", (64, 64), region=bad)
    with pytest.raises(DataError, match=r"odd/meta_data_region\.pkl: field 'points' has an odd number"):
        ds.load("dragbench_sr/all/odd")
    write_dragbench_sample(root / "noregion", (64, 64))
    with pytest.raises(DataError, match=r"noregion/meta_data_region\.pkl: file not found"):
        ds.load("dragbench_sr/all/noregion")
    empty = region_meta((64, 64))
    empty["mask"] = np.zeros((64, 64), np.uint8)
    write_dragbench_sample(root / "emptyregion", (64, 64), region=empty)
    with pytest.raises(DataError, match=r"emptyregion/meta_data_region\.pkl: field 'mask' is empty"):
        ds.load("dragbench_sr/all/emptyregion")


def test_region_prompt_differing_from_point_prompt_is_kept(tmp_path):
    root = tmp_path / "sr"
    write_dragbench_sample(root / "a", (64, 64), region=region_meta((64, 64), prompt="edit prompt"))
    sample = open_("dragbench_sr", root).load("dragbench_sr/all/a")
    assert sample.prompt == "a photo of a cat" and sample.meta["edit_prompt"] == "edit prompt"


# --- DragBench-S and Drag100 fixtures ----------------------------------------------------------------

def test_dragbench_s_fixture(tmp_path):
    root = tmp_path / "s"
    write_dragbench_s_sample(root / "art_0")
    write_dragbench_s_sample(root / "sunset", prompt="a sunset")  # no digits 0–16 in the name
    (root / "stray").mkdir()
    (root / "stray" / "origin_image.png").write_bytes(b"")
    ds = open_("dragbench_s", root)
    assert ds.sample_ids() == ["dragbench_s/all/art_0", "dragbench_s/all/sunset"]
    sample = ds.load("dragbench_s/all/sunset")
    assert sample.prompt == "a sunset" and sample.size == (64, 48)
    np.testing.assert_array_equal(sample.handles, [[10, 10], [20, 30]])
    np.testing.assert_array_equal(sample.targets, [[16, 12], [30, 30]])
    assert sample.mask.sum() == 32 * 32
    write_dragbench_s_sample(root / "dim", mask_value=128)  # SDE-Drag keeps mask > 128 only
    with pytest.raises(DataError, match=r"dim/mask\.png: field 'mask' is empty"):
        ds.load("dragbench_s/all/dim")
    write_dragbench_s_sample(root / "uneven", source=[[1, 1], [2, 2]], target=[[3, 3]])
    with pytest.raises(DataError, match=r"uneven/prompt\.json: fields 'source' \(2 points\) and 'target' \(1 points\)"):
        ds.load("dragbench_s/all/uneven")
    write_dragbench_s_sample(root / "outside", target=[[16, 12], [30, 48]])
    with pytest.raises(DataError, match=r"outside/prompt\.json: field 'target'\[1\] = \[30, 48\] lies outside the 64x48"):
        ds.load("dragbench_s/all/outside")


def test_drag100_fixture_and_its_errors(tmp_path):
    root = tmp_path / "drag100"
    write_drag100_sample(root / "cat_0")
    (root / ".DS_Store").write_bytes(b"\x00")
    ds = open_("drag100", root)
    sample = ds.load("drag100/all/cat_0")
    assert sample.prompt == "" and sample.size == (64, 80) and sample.mask.sum() == 40 * 48
    write_drag100_sample(root / "badjson")
    (root / "badjson" / "points.json").write_text('{"points": [[1, 2], [3, 4]')
    with pytest.raises(DataError, match=r"badjson/points\.json: invalid JSON"):
        ds.load("drag100/all/badjson")
    write_drag100_sample(root / "rgbmask")
    write_image(root / "rgbmask" / "mask.png", np.repeat(box_mask(64, 80, (8, 8, 48, 56), 255)[..., None], 3, -1))
    with pytest.raises(DataError, match=r"rgbmask/mask\.png: field 'mask\.png': mode RGB"):
        ds.load("drag100/all/rgbmask")
    write_drag100_sample(root / "greymask")
    write_image(root / "greymask" / "mask.png", box_mask(64, 80, (8, 8, 48, 56), 200))
    with pytest.raises(DataError, match=r"greymask/mask\.png: field 'mask' must be binary"):
        ds.load("drag100/all/greymask")
    write_drag100_sample(root / "nokey")
    write_json(root / "nokey" / "points.json", {"pts": []})
    with pytest.raises(DataError, match=r"nokey/points\.json: missing field\(s\) \['points'\]"):
        ds.load("drag100/all/nokey")


# --- shared options ------------------------------------------------------------------------------------

def test_category_and_id_filters(tmp_path):
    root = write_dragbench_tree(tmp_path / "dragbench")
    assert open_("dragbench_d", root, categories=["art_work"]).sample_ids() == [
        "dragbench_d/art_work/PJC_2023-09-15-1052-01", "dragbench_d/art_work/PJC_2023-09-15-1549-43"]
    ids = ["art_work/PJC_2023-09-15-1549-43", "dragbench_d/animals/JH_2023-09-14-1825-41"]
    assert open_("dragbench_d", root, ids=ids).sample_ids() == [
        "dragbench_d/animals/JH_2023-09-14-1825-41", "dragbench_d/art_work/PJC_2023-09-15-1549-43"]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("# DR list\nart_work/PJC_2023-09-15-1052-01\n\nanimals/JH_2023-09-14-1825-41  # first\n")
    assert open_("dragbench_d", root, ids_file=str(id_file)).sample_ids() == [
        "dragbench_d/animals/JH_2023-09-14-1825-41", "dragbench_d/art_work/PJC_2023-09-15-1052-01"]
    with pytest.raises(DataError, match=r"unknown category \['animal'\]; categories: animals, art_work"):
        open_("dragbench_d", root, categories=["animal"]).sample_ids()
    with pytest.raises(DataError, match=r"not found .*\['art_work/PJC_2023-09-15-1052-02'\]; did you mean "
                                        r"'art_work/PJC_2023-09-15-1052-01'"):
        open_("dragbench_d", root, ids=["art_work/PJC_2023-09-15-1052-02"]).sample_ids()
    with pytest.raises(DataError, match=r"missing\.txt: cannot read the sample id list"):
        open_("dragbench_d", root, ids_file=str(tmp_path / "missing.txt")).sample_ids()
    assert len(open_("dragbench_d", root, limit=2).sample_ids()) == 2
    assert open_("dragbench_d", root, ids=["PJC_2023-09-15-1052-01"]).sample_ids() == [
        "dragbench_d/art_work/PJC_2023-09-15-1052-01"]  # a bare name that only one category has
    write_dragbench_sample(root / "animals" / "PJC_2023-09-15-1052-01")
    with pytest.raises(DataError, match=r"\['PJC_2023-09-15-1052-01'\] occur in several categories"):
        open_("dragbench_d", root, ids=["PJC_2023-09-15-1052-01"]).sample_ids()


def test_order_is_deterministic_and_shards_partition_the_ids(tmp_path):
    root = tmp_path / "s"
    names = [f"{p}_{i}" for p in ("nature", "dog", "art", "generated") for i in range(6)]
    for name in reversed(names):  # creation order must not matter
        write_dragbench_s_sample(root / name)
    everything = open_("dragbench_s", root).sample_ids()
    assert everything == sorted(everything) and len(everything) == 24
    assert everything == open_("dragbench_s", root).sample_ids()
    shards = [open_dataset({"name": "dragbench_s", "root": str(root)}, {"index": i, "count": 3}).sample_ids()
              for i in range(3)]
    assert sorted(sum(shards, [])) == everything
    assert all(not set(a) & set(b) for i, a in enumerate(shards) for b in shards[i + 1:])
    assert all(shard == sorted(shard) and shard for shard in shards)


def test_point_fraction_subsamples_dense_pairs_seeded(tmp_path):
    root = tmp_path / "sr"
    size = (96, 96)
    src = [[8 * x, 8 * y] for y in range(1, 11) for x in range(1, 11)]  # 100 dense pairs
    region = {"prompt": "p", "points": [p for pair in zip(src, [[x + 8, y] for x, y in src]) for p in pair],
              "mask": box_mask(*size, (0, 0, 96, 96))}
    write_dragbench_sample(root / "a", size, region=region)
    full = open_("dragbench_sr", root).load("dragbench_sr/all/a")
    quarter = open_("dragbench_sr", root, point_fraction=0.25, point_seed=1)
    a, b = quarter.load("dragbench_sr/all/a"), quarter.load("dragbench_sr/all/a")
    other = open_("dragbench_sr", root, point_fraction=0.25, point_seed=2).load("dragbench_sr/all/a")
    assert len(full.dense_handles) == 100 and len(a.dense_handles) == 25
    np.testing.assert_array_equal(a.dense_handles, b.dense_handles)
    assert not np.array_equal(a.dense_handles, other.dense_handles)
    np.testing.assert_array_equal(a.dense_targets, a.dense_handles + [8, 0])  # pairs stay paired
    np.testing.assert_array_equal(a.handles, full.handles)  # sparse scoring points untouched
    assert describe(quarter)[0]["dense_pairs"] == 25
    assert len(open_("dragbench_sr", root, point_fraction=0.001).load("dragbench_sr/all/a").dense_handles) == 1
    with pytest.raises(DataError, match=r"point_fraction must be in \(0, 1\]"):
        open_("dragbench_sr", root, point_fraction=0)


def test_point_fraction_applies_to_regions_from_points(tmp_path):
    root = tmp_path / "d"
    size = (96, 80)
    meta = dragbench_meta(size, points=[[30, 30], [46, 34]], mask=box_mask(*size, (16, 16, 56, 56)))
    write_dragbench_sample(root / "c" / "s", size, meta=meta)
    full = open_("dragbench_d", root, regions="from_points").load("dragbench_d/c/s")
    half = open_("dragbench_d", root, regions="from_points", point_fraction=0.5).load("dragbench_d/c/s")
    assert len(half.dense_handles) == round(len(full.dense_handles) * 0.5)


def test_regions_from_points_needs_a_handle_inside_the_mask(tmp_path):
    root = tmp_path / "d"
    size = (96, 80)
    meta = dragbench_meta(size, points=[[80, 70], [88, 70]], mask=box_mask(*size, (16, 16, 56, 56)))
    write_dragbench_sample(root / "c" / "s", size, meta=meta)
    with pytest.raises(DataError, match=r"s/meta_data\.pkl: regions=from_points found no handle point inside"):
        open_("dragbench_d", root, regions="from_points").load("dragbench_d/c/s")
