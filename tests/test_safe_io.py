"""The safe-reading helpers on valid input and at their edges (the broken inputs are in hostile_corpus.py)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.data import safe_io
from harness.data.base import DataError


def test_valid_files_round_trip(tmp_path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.array([[0, 255, 128]], np.uint8)).save(tmp_path / "m.png")
    assert np.array_equal(safe_io.read_image(tmp_path / "a.png", "image", root=tmp_path), rgb)
    assert safe_io.read_image(tmp_path / "p.png", "image").shape == (5, 7, 3)
    assert safe_io.read_mask(tmp_path / "m.png", "mask", (1, 3)).tolist() == [[False, True, True]]
    assert safe_io.read_mask(tmp_path / "m.png", "mask", (1, 3), threshold=128).tolist() == [[False, True, False]]
    (tmp_path / "a.json").write_text('{"points": [[1, 2.5]], "prompt": "x"}')
    assert safe_io.read_json(tmp_path / "a.json", "meta") == {"points": [[1, 2.5]], "prompt": "x"}
    assert safe_io.check_points([[0, 0], [6.5, 4.9]], "points", "f.json", (7, 5)).dtype == np.float64


def test_resolve_inside_refuses_dot_dot_and_allows_links_within(tmp_path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "a" / "f").write_text("x")
    (tmp_path / "root" / "link").symlink_to(tmp_path / "root" / "a" / "f")
    assert safe_io.resolve_inside(tmp_path / "root", "link", "image") == (tmp_path / "root" / "a" / "f").resolve()
    with pytest.raises(DataError, match="field 'image_path': resolves to .* outside the dataset root"):
        safe_io.resolve_inside(tmp_path / "root", "a/../../secret", "image_path")


def test_rle_overrun_is_clipped_like_the_official_decoder() -> None:
    mask = safe_io.decode_rle([0, 2, 10, 100], "mask", "mapping_file.json", (3, 4))
    assert mask.sum() == 2 + 2 and mask[0, :2].all() and mask[2, 2:].all()
    with pytest.raises(DataError, match="mapping_file.json: field 'mask': RLE run 0 .* must be two integers"):
        safe_io.decode_rle([0.5, 2], "mask", "mapping_file.json", (3, 4))


def test_empty_mask_is_refused_unless_allowed() -> None:
    with pytest.raises(DataError, match="mask is empty"):
        safe_io.check_mask(np.zeros((2, 2)), "mask", "m.png", (2, 2))
    assert not safe_io.check_mask(np.zeros((2, 2)), "mask", "m.png", (2, 2), allow_empty=True).any()
