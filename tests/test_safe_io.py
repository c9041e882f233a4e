"""Safe readers on valid input and at their edges: the allow-list unpickler, image mode checks, paths that
leave the dataset root, JSON and npy errors that name the file (the broken datasets are in hostile_corpus.py)."""
from __future__ import annotations

import os
import pickle
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from harness.data.base import DataError
from harness.data.safe_io import (_AllowListUnpickler, files_fingerprint, image_header, load_pickle, read_image,
                                  read_json, read_mask, read_npy, resolve_inside)
from tests.dataset_fixtures import dragbench_meta, gradient_image, write_image, write_pickle


def test_valid_files_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 255, 128]], np.uint8)).save(tmp_path / "m.png")
    assert np.array_equal(read_image(tmp_path / "a.png", "image", root=tmp_path), rgb)
    assert read_mask(tmp_path / "m.png", "mask", root=tmp_path).tolist() == [[0, 255, 128]]
    (tmp_path / "a.json").write_text('{"points": [[1, 2.5]], "prompt": "x"}')
    assert read_json(tmp_path / "a.json", root=tmp_path) == {"points": [[1, 2.5]], "prompt": "x"}


def test_resolve_inside_refuses_dot_dot_and_allows_links_within(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "a" / "f").write_text("x")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "root" / "a" / "f")
    assert resolve_inside(tmp_path / "root", "link", "image") == (tmp_path / "root" / "a" / "f").resolve()
    with pytest.raises(DataError, match="field 'image_path': resolves to .* outside the dataset root"):
        resolve_inside(tmp_path / "root", "a/../../secret", "image_path")


def test_empty_files_and_fifos_are_refused_before_reading(tmp_path):
    (tmp_path / "meta_data.pkl").write_bytes(b"")
    with pytest.raises(DataError, match=r"meta_data\.pkl: file is empty"):
        load_pickle(tmp_path / "meta_data.pkl")
    os.mkfifo(tmp_path / "original_image.png")  # opening it for reading would block forever
    with pytest.raises(DataError, match=r"original_image\.png: field 'image': not a regular file"):
        image_header(tmp_path / "original_image.png", "image")


class _RunsCommand:
    """Unpickling this would run a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_has_no_effect(tmp_path):
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "meta_data.pkl", {"prompt": "x", "points": [], "mask": _RunsCommand(marker)})
    with pytest.raises(DataError, match=r"meta_data\.pkl.*refusing to unpickle global (posix|nt|os)\.system"):
        load_pickle(path)
    assert not marker.exists()


def test_refused_globals_are_never_imported(tmp_path):
    module = "editlab_test_module_that_must_not_be_imported"
    # protocol 0: GLOBAL opcode naming a module, then a REDUCE that would call it
    payload = f"c{module}\nrun\n(S'x'\ntR.".encode()
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=rf"evil\.pkl.*{module}\.run"):
        load_pickle(path)
    assert module not in sys.modules


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen"),
                                         ("numpy.core.multiarray", "scalar"), ("torch", "load")])
def test_only_the_four_numpy_globals_are_allowed(tmp_path, module, name):
    unpickler = _AllowListUnpickler(open(os.devnull, "rb"), tmp_path / "x.pkl")
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        unpickler.find_class(module, name)
    for allowed in [("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype")]:
        assert unpickler.find_class(*allowed) is not None


def test_protocol_4_numpy_pickle_round_trips(tmp_path):
    meta = dragbench_meta()
    loaded = load_pickle(write_pickle(tmp_path / "meta_data.pkl", meta, protocol=4))
    assert loaded["prompt"] == meta["prompt"] and loaded["points"] == meta["points"]
    np.testing.assert_array_equal(loaded["mask"], meta["mask"])
    assert loaded["mask"].dtype == np.uint8


@pytest.mark.parametrize("protocol,global_name", [(5, "_frombuffer"), (2, "_codecs.encode")])
def test_other_protocols_reference_refused_globals(tmp_path, protocol, global_name):
    path = write_pickle(tmp_path / "meta_data.pkl", dragbench_meta(), protocol=protocol)
    with pytest.raises(DataError, match=global_name):
        load_pickle(path)


def test_corrupt_and_missing_pickles_name_the_file(tmp_path):
    path = tmp_path / "meta_data.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4)[:-5])
    with pytest.raises(DataError, match=r"meta_data\.pkl: not a valid pickle"):
        load_pickle(path)
    with pytest.raises(DataError, match="missing.pkl: file not found"):
        load_pickle(tmp_path / "missing.pkl")


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("kind,message", [
    ("palette", "palette image"),
    ("rgba", "alpha channel"),
    ("la", "alpha channel"),
    ("grey16", "16-bit"),
    ("rgb16", "16-bit PNG"),
])
def test_image_mode_surprises_are_refused_with_file_and_field(tmp_path, kind, message):
    rgb = gradient_image(16, 12)
    path = tmp_path / "original_image.png"
    if kind == "palette":
        Image.fromarray(rgb).convert("P").save(path)
    elif kind == "rgba":
        Image.fromarray(rgb).convert("RGBA").save(path)
    elif kind == "la":
        Image.fromarray(rgb).convert("LA").save(path)
    elif kind == "grey16":
        Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(path)
    else:
        cv2.imwrite(str(path), rgb.astype(np.uint16) * 257)  # 48-bit PNG: PIL would open it as plain "RGB"
    with pytest.raises(DataError, match=rf"original_image\.png: field 'original_image\.png': .*{message}"):
        image_header(path, "original_image.png")
    with pytest.raises(DataError, match=message):
        read_image(path, "original_image.png")


def test_grey_images_convert_and_masks_need_one_channel(tmp_path):
    grey = _save(tmp_path / "grey.png", gradient_image(16, 12)[..., 0])
    assert read_image(grey, "image").shape == (12, 16, 3)
    assert read_mask(grey, "mask").shape == (12, 16)
    rgb = _save(tmp_path / "rgb.png", gradient_image(16, 12))
    with pytest.raises(DataError, match=r"rgb\.png: field 'mask': mode RGB; expected mode L or 1"):
        read_mask(rgb, "mask")
    header = image_header(rgb, "image")
    assert header.size == (16, 12) and header.mode == "RGB" and header.format == "PNG"


def test_truncated_png_passes_the_header_but_not_decoding(tmp_path):
    path = _save(tmp_path / "original_image.png", gradient_image(64, 48))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert image_header(path, "original_image.png").size == (64, 48)
    with pytest.raises(DataError, match=r"original_image\.png: field 'original_image\.png': cannot be decoded"):
        read_image(path, "original_image.png")


def test_unreadable_and_missing_images(tmp_path):
    path = tmp_path / "original.jpg"
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"original\.jpg: field 'source': not a readable image"):
        image_header(path, "source")
    with pytest.raises(DataError, match=r"nothing\.png: field 'source': file not found"):
        read_image(tmp_path / "nothing.png", "source")


def test_json_and_npy_errors_name_the_file(tmp_path):
    bad = tmp_path / "points.json"
    bad.write_text('{"points": [[1, 2],')
    with pytest.raises(DataError, match=r"points\.json: invalid JSON at line 1"):
        read_json(bad)
    objects = tmp_path / "id_list.npy"
    np.save(objects, np.array([1, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"id_list\.npy: cannot read as a plain \.npy array"):
        read_npy(objects)


def test_fingerprint_changes_with_content(tmp_path):
    a = write_image(tmp_path / "a.png", gradient_image(8, 8))
    first = files_fingerprint([a])
    assert first == files_fingerprint([a]) and len(first) == 16
    write_image(a, gradient_image(8, 8, seed=3))
    assert files_fingerprint([a]) != first
