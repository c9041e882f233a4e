"""The `instruction_folder` format (datasets/instruction_folder.md): samples, optional fields, and errors
that name the file and the field."""
from __future__ import annotations

import json

import pytest

from harness.data.base import DataError, open_dataset
from harness.data.__main__ import dataset_config
from tests.dataset_fixtures import gradient_image, write_image, write_instruction_folder


def _open(root):
    return open_dataset(dataset_config("instruction_folder", str(root), []))


def test_samples_carry_instruction_captions_and_target(tmp_path):
    dataset = _open(write_instruction_folder(tmp_path / "ins"))
    assert dataset.sample_ids() == ["instruction_folder/all/cat", "instruction_folder/global/street"]
    cat = dataset.load("instruction_folder/all/cat")
    assert cat.instruction == "give the cat a red hat" and cat.family == "prompt"
    assert cat.source_prompt == "a cat on a sofa" and cat.target_prompt == "a cat wearing a red hat on a sofa"
    assert cat.ground_truth is not None and cat.ground_truth.shape == cat.image.shape
    assert not (cat.ground_truth == cat.image).all()
    street = dataset.load("instruction_folder/global/street")
    assert street.ground_truth is None and street.target_prompt == "" and street.category == "global"
    assert dataset.loader.inspect("instruction_folder/all/cat").ground_truth


def _manifest(root, entries):
    (root / "instructions.json").write_text(json.dumps(entries))
    return _open(root)


@pytest.mark.parametrize("entry, message", [
    ({"image": "images/cat.png"}, r"entry 'cat': missing field\(s\) \['instruction'\]"),
    ({"image": "images/cat.png", "instruction": 3}, r"entry 'cat': field 'instruction' must be a string"),
    ({"image": "images/cat.png", "instruction": "x", "caption": "y"}, r"entry 'cat': unknown field\(s\) \['caption'\]"),
    ({"image": "images/nope.png", "instruction": "x"}, r"nope.png"),
    ({"image": "images/cat.png", "instruction": "x", "target": "small.png"}, r"field 'target' is 8x8, the image 64x48"),
    ({"image": "images/cat.png", "instruction": "x", "category": "a/b"}, r"field 'category'"),
])
def test_bad_entries_name_the_file_and_the_field(tmp_path, entry, message):
    root = write_instruction_folder(tmp_path / "ins")
    write_image(root / "small.png", gradient_image(8, 8))
    dataset = _manifest(root, {"cat": entry})
    with pytest.raises(DataError, match=message) as info:
        dataset.load(dataset.sample_ids()[0])
    assert "instructions.json" in str(info.value) or "nope.png" in str(info.value)


def test_a_path_outside_the_root_is_refused(tmp_path):
    root = write_instruction_folder(tmp_path / "ins")
    write_image(tmp_path / "outside.png", gradient_image(64, 48))
    dataset = _manifest(root, {"cat": {"image": "../outside.png", "instruction": "x"}})
    with pytest.raises(DataError):
        dataset.load("instruction_folder/all/cat")


def test_an_empty_manifest_or_a_bad_name_is_refused(tmp_path):
    root = write_instruction_folder(tmp_path / "ins")
    with pytest.raises(DataError, match="non-empty JSON object"):
        _manifest(root, []).sample_ids()
    with pytest.raises(DataError, match="entry 'a b': a sample name"):
        _manifest(root, {"a b": {"image": "images/cat.png", "instruction": "x"}}).sample_ids()
