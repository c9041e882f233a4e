"""DragBench-DR/SR with Inpaint4Drag's inputs (`annotations=i4p`, protocols_2025.md §1): `meta_data_i4p.pkl`
drives the edit, `meta_data.pkl` the scoring; the file goes through the allow-list unpickler."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from harness.data.base import DataError, open_dataset
from tests.dataset_fixtures import box_mask, write_dragbench_tree, write_pickle

DR_ID = "dragbench_dr/animals/JH_2023-09-14-1825-41"


def i4p_meta(size=(64, 43)):
    w, h = size
    return {"mask": box_mask(w, h, (6, 6, 30, 30)), "points": [[10, 12], [16, 12], [20, 20], [26, 22]]}


def test_i4p_file_drives_the_edit_and_meta_data_the_score(tmp_path: Path):
    root = write_dragbench_tree(tmp_path, region=True)
    folder = root / "animals" / "JH_2023-09-14-1825-41"
    write_pickle(folder / "meta_data_i4p.pkl", i4p_meta())
    region = open_dataset({"name": "dragbench_dr", "root": str(root)})
    i4p = open_dataset({"name": "dragbench_dr", "root": str(root), "annotations": "i4p"})
    a, b = region.load(DR_ID), i4p.load(DR_ID)
    assert b.dense_handles.tolist() == [[10, 12], [20, 20]] and b.dense_targets.tolist() == [[16, 12], [26, 22]]
    assert np.array_equal(b.edit_mask, i4p_meta()["mask"] > 0)
    assert b.meta["edit_prompt"] == "" and b.meta["annotations"] == "i4p"
    assert np.array_equal(a.handles, b.handles) and np.array_equal(a.mask, b.mask) and a.prompt == b.prompt
    assert region.loader.fingerprint(DR_ID) != i4p.loader.fingerprint(DR_ID)
    # a sample without the file is an error naming it; region annotations do not need it
    other = "dragbench_dr/art_work/PJC_2023-09-15-1052-01"
    with pytest.raises(DataError, match="meta_data_i4p.pkl: file not found"):
        i4p.load(other)
    assert region.load(other).dense_handles is not None


def test_i4p_file_is_validated_and_unpickled_safely(tmp_path: Path):
    root = write_dragbench_tree(tmp_path, region=True)
    folder = root / "animals" / "JH_2023-09-14-1825-41"
    ds = open_dataset({"name": "dragbench_dr", "root": str(root), "annotations": "i4p"})
    write_pickle(folder / "meta_data_i4p.pkl", {**i4p_meta(), "points": [[10, 12], [99, 12]]})
    with pytest.raises(DataError, match=r"meta_data_i4p.pkl: field 'points'\[1\] = \[99, 12\] lies outside"):
        ds.load(DR_ID)
    write_pickle(folder / "meta_data_i4p.pkl", {**i4p_meta(), "mask": np.zeros((43, 64), np.uint8)})
    with pytest.raises(DataError, match=r"meta_data_i4p.pkl: field 'mask' is empty"):
        ds.load(DR_ID)
    (folder / "meta_data_i4p.pkl").write_bytes(pickle.dumps({"mask": print, "points": []}, protocol=4))
    with pytest.raises(DataError, match="refusing to unpickle global builtins.print"):
        ds.load(DR_ID)


def test_i4p_option_errors(tmp_path: Path):
    root = write_dragbench_tree(tmp_path, region=True, nested=False)
    with pytest.raises(DataError, match="annotations must be one of"):
        open_dataset({"name": "dragbench_sr", "root": str(root), "annotations": "inpaint"})
    with pytest.raises(DataError, match="annotations=i4p .* needs regions=file"):
        open_dataset({"name": "dragbench_sr", "root": str(root), "annotations": "i4p", "regions": "none"})
    write_pickle(root / "art_0" / "meta_data_i4p.pkl", i4p_meta())
    sr = open_dataset({"name": "dragbench_sr", "root": str(root), "annotations": "i4p"})
    assert sr.load("dragbench_sr/all/art_0").dense_handles.tolist() == [[10, 12], [20, 20]]
