"""PIE-Bench and COCOEE loaders on fixtures written in their documented formats (datasets.md §6, §7)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.data.base import DataError, open_dataset
from harness.data.checks import rle_mask
from harness.data.describe import describe
from harness.data.pie_bench import decode_rle
from harness.types import ExemplarSample, PromptEditSample
from tests.dataset_fixtures import (COCOEE_IDS, encode_rle, gradient_image, pie_entry, pie_object_mask, write_cocoee,
                                    write_image, write_pie_bench)


def open_(name, root, **options):
    return open_dataset({"name": name, "root": str(root), **options})


def reference_mask_decode(rle, shape=(512, 512)):
    """The official evaluator's decoder, written out as datasets.md §6.3 describes it (pixel by pixel)."""
    length = shape[0] * shape[1]
    m = np.zeros(length)
    for i in range(0, len(rle), 2):
        for j in range(min(rle[i + 1], length - rle[i])):
            m[rle[i] + j] = 1
    m = m.reshape(shape)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 1
    return m.astype(bool)


# --- RLE ----------------------------------------------------------------------------------------------

def test_rle_round_trip_and_documented_border_runs():
    mask = pie_object_mask()
    rle = encode_rle(mask)
    assert rle[:4] == [0, 513, 1023, 2]  # row 0 + (1, 0); (1, 511) + (2, 0)
    assert rle[-2:] == [261631, 513]  # (510, 511) + all of row 511
    np.testing.assert_array_equal(decode_rle(rle), mask)


@pytest.mark.parametrize("rle", [[], [0, 513, 261000, 5000], [5, 3, 1030, 0, 70000, 900], [262143, 1]])
def test_rle_matches_the_official_decoder(rle):
    np.testing.assert_array_equal(decode_rle(rle), reference_mask_decode(rle))


def test_rle_overrun_is_clipped_and_empty_rle_is_the_border():
    m = decode_rle([0, 513, 261000, 5000])
    assert m.reshape(-1)[261000:].all() and m.shape == (512, 512)
    border = decode_rle([])
    assert border.sum() == 4 * 511 and not border[1:-1, 1:-1].any()


def test_generic_rle_clips_overruns_and_adds_no_border():
    mask = rle_mask([0, 2, 10, 100], (3, 4), "sample.json: field 'mask_rle'")
    assert mask.sum() == 2 + 2 and mask[0, :2].all() and mask[2, 2:].all()
    assert not rle_mask([], (3, 4), "x").any()


@pytest.mark.parametrize("rle,pattern", [([0, 5, 10], "odd length"), ([0, -1], "negative length"),
                                         ([262144, 1], "outside the 512x512"), ([0, 1.5], "integers"),
                                         ("0 5", "must be a list")])
def test_malformed_rle_is_refused(rle, pattern):
    with pytest.raises(DataError, match=pattern):
        decode_rle(rle, where="mapping_file.json: entry 'x': field 'mask'")


# --- PIE-Bench ---------------------------------------------------------------------------------------

def test_pie_bench_fixture_loads_prompts_masks_and_types(tmp_path):
    root = write_pie_bench(tmp_path / "pie")
    (root / "annotation_images" / ".DS_Store").write_bytes(b"\x00")
    ds = open_("pie_bench", root)
    assert ds.family == "prompt"
    assert ds.sample_ids() == ["pie_bench/0_random_140/000000000000", "pie_bench/1_change_object_80/111000000000",
                               "pie_bench/9_change_style_80/921000000003"]
    flat = ds.load("pie_bench/0_random_140/000000000000")
    assert isinstance(flat, PromptEditSample) and flat.size == (512, 512)
    assert flat.source_prompt == "a [round] mountain bicycle on the road"
    assert flat.target_prompt == "a [square] [rusty] mountain bicycle on the road"
    assert flat.encode_source_prompt == "a round mountain bicycle on the road"
    assert flat.encode_target_prompt == "a square rusty mountain bicycle on the road"
    assert flat.blended_words == ("bicycle", "bicycle") and flat.instruction == "Make the bike rusty"
    assert flat.edit_type == 0 and flat.edit_type_name == "random" and flat.category == "0_random_140"
    np.testing.assert_array_equal(flat.mask, pie_object_mask())
    nested = ds.load("pie_bench/1_change_object_80/111000000000")
    assert nested.edit_type == 1 and nested.edit_type_name == "change_object"
    assert nested.meta["image_path"] == "1_change_object_80/1_artificial/1_animal/111000000000.jpg"
    np.testing.assert_array_equal(nested.mask, reference_mask_decode([0, 513, 261000, 5000]))
    empty = ds.load("pie_bench/9_change_style_80/921000000003")
    assert empty.blended_words == () and empty.mask.sum() == 4 * 511 and empty.edit_type_name == "change_style"
    stats, errors = describe(ds)
    assert errors == [] and stats["samples"] == 3 and stats["pairs"] is None
    assert stats["image_sizes"] == {"512x512": 3} and stats["categories"]["1_change_object_80"] == 1
    assert open_("pie_bench", root, categories=["9_change_style_80"]).sample_ids() == [
        "pie_bench/9_change_style_80/921000000003"]
    assert len({ds.loader.fingerprint(i) for i in ds.sample_ids()}) == 3


def _one_entry(tmp_path, **changes):
    entry = pie_entry("2_add_object_80/1_artificial/2_human/211000000001.jpg", "2", [0, 513])
    entry.update(changes)
    image_path = entry["image_path"] if isinstance(entry["image_path"], str) else "x.jpg"
    root = tmp_path / "pie"
    write_image(root / "annotation_images" / image_path, gradient_image(512, 512), quality=90)
    (root / "mapping_file.json").write_text(json.dumps({"211000000001": entry}))
    return open_("pie_bench", root)


@pytest.mark.parametrize("changes,pattern", [
    ({"editing_type_id": 2}, r"field 'editing_type_id': expected a string"),
    ({"editing_type_id": "12"}, r"field 'editing_type_id'"),
    ({"editing_type_id": "3"}, r"folder '2_add_object_80' does not belong to editing type 3"),
    ({"mask": [0, 513, 7]}, r"entry '211000000001': field 'mask': RLE has an odd length"),
    ({"editing_prompt": None}, r"entry '211000000001': field 'editing_prompt' must be a string"),
    ({"image_path": "2_add_object_80/1_artificial/2_human/211000000002.jpg"}, r"does not match the entry id"),
])
def test_malformed_pie_entries_name_file_entry_and_field(tmp_path, changes, pattern):
    ds = _one_entry(tmp_path, **changes)
    with pytest.raises(DataError, match=r"mapping_file\.json: .*" + pattern):
        ds.load(ds.sample_ids()[0])


def test_pie_image_problems(tmp_path):
    ds = _one_entry(tmp_path)
    image = tmp_path / "pie" / "annotation_images" / "2_add_object_80/1_artificial/2_human/211000000001.jpg"
    write_image(image, gradient_image(256, 256))
    with pytest.raises(DataError, match=r"211000000001\.jpg: source image is 256x256, but PIE-Bench masks"):
        ds.load(ds.sample_ids()[0])
    image.unlink()
    with pytest.raises(DataError, match=r"211000000001\.jpg: field 'source image': file not found"):
        ds.load(ds.sample_ids()[0])
    (tmp_path / "pie" / "mapping_file.json").write_text("{")
    with pytest.raises(DataError, match=r"mapping_file\.json: invalid JSON"):
        open_("pie_bench", tmp_path / "pie").sample_ids()


# --- COCOEE ------------------------------------------------------------------------------------------

def test_cocoee_fixture_loads_triplets(tmp_path):
    root = write_cocoee(tmp_path / "test_bench")
    ds = open_("cocoee", root)
    assert ds.family == "exemplar"
    assert ds.sample_ids() == ["cocoee/all/000000001773", "cocoee/all/900100376112"]
    sample = ds.load("cocoee/all/000000001773")
    assert isinstance(sample, ExemplarSample) and sample.size == (72, 56)
    assert sample.reference.shape == (40, 32, 3) and sample.mask.sum() == 30 * 32
    assert sample.mask[12:44, 10:40].all()
    stats, errors = describe(ds, verify=True)
    assert errors == [] and stats["samples"] == 2 and stats["image_sizes"] == {"72x56": 1, "80x56": 1}
    assert open_("cocoee", root, ids=["900100376112"]).sample_ids() == ["cocoee/all/900100376112"]
    np.testing.assert_array_equal(np.load(root / "id_list.npy"), COCOEE_IDS)


def test_cocoee_errors(tmp_path):
    root = write_cocoee(tmp_path / "test_bench")
    (root / "Ref_3500" / "000000001773_ref.png").unlink()
    write_image(root / "Mask_bbox_3500" / "900100376112_mask.png", np.zeros((56, 80), np.uint8))
    ds = open_("cocoee", root)
    with pytest.raises(DataError, match=r"000000001773_ref\.png: field 'exemplar image \(ref\)': file not found"):
        ds.load("cocoee/all/000000001773")
    with pytest.raises(DataError, match=r"900100376112_mask\.png: field 'mask' is empty"):
        ds.load("cocoee/all/900100376112")
    np.save(root / "id_list.npy", np.array([1.5, 2.0]))
    with pytest.raises(DataError, match=r"id_list\.npy: expected a non-empty 1-D integer array"):
        open_("cocoee", root).sample_ids()
    np.save(root / "id_list.npy", np.array([1, 1], dtype=np.int64))
    with pytest.raises(DataError, match=r"id_list\.npy: duplicate ids"):
        open_("cocoee", root).sample_ids()
