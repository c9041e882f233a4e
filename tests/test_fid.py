"""Fréchet distances (`fid@pbe`, `fid_inception@pbe`): parity with pytorch-fid, closed forms, the
reference-statistics cache, weights handling and the folder CLI. Never downloads: Inception runs on a
random state dict saved to disk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.metrics import frechet
from harness.metrics.frechet import GaussianStats, embed_arrays, embed_files, folder_statistics, frechet_distance, statistics
from harness.metrics.inception import FID_WEIGHTS_FILE, InceptionPool3, InceptionWeightsError, random_state_dict


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path / "cache"))


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="session")
def inception_file(tmp_path_factory) -> Path:
    """A random FID-Inception state dict without the `fc` layer, as safetensors."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in random_state_dict(seed=1).items() if not k.startswith("fc.")}
    path = tmp_path_factory.mktemp("inception") / "random_inception.safetensors"
    save_file(state, str(path))
    return path


@pytest.fixture(scope="session")
def inception(inception_file) -> InceptionPool3:
    return InceptionPool3(str(inception_file), "cpu")


def write_images(folder: Path, n: int, seed: int, size=(48, 40), ext="png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = rng.random(3) * 200
        image = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i:03d}.{ext}")
        Image.fromarray(image).save(paths[-1])
    return paths


class MeanColour:
    """A cheap stand-in extractor: per-channel means and standard deviations (6-d), counting its calls."""

    identity = "mean-colour"
    preprocess = "ToTensor"
    dim = 6

    def __init__(self) -> None:
        self.calls = 0

    @staticmethod
    def transform(image: Image.Image) -> torch.Tensor:
        from torchvision.transforms.functional import to_tensor

        return to_tensor(image.convert("RGB"))

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += len(batch)
        return torch.cat([batch.mean(dim=(2, 3)), batch.std(dim=(2, 3))], dim=1)


# ------------------------------------------------------------------------------------------ formula


def test_frechet_distance_equals_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (60, 12)), rng.normal(0.3, 1.5, (50, 12)) @ rng.normal(0, 1, (12, 12))
    sa, sb = statistics(a), statistics(b)
    theirs = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(sa, sb) == pytest.approx(theirs, rel=1e-4)
    # fewer images than dimensions: singular covariances, pytorch-fid's diagonal offset path
    a, b = rng.normal(0, 1, (5, 16)), rng.normal(0.5, 1, (6, 16))
    theirs = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(statistics(a), statistics(b)) == pytest.approx(theirs, rel=1e-4)


def test_identical_sets_give_zero():
    features = np.random.default_rng(1).normal(0, 1, (40, 8))
    assert abs(frechet_distance(statistics(features), statistics(features.copy()))) < 1e-8


def test_gaussians_with_known_means_and_covariances_match_the_closed_form():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # shared eigenvectors: Σ₁Σ₂ has a closed-form square root
    ev1, ev2 = np.array([1.0, 2.0, 0.5, 3.0, 0.1]), np.array([2.0, 0.5, 0.5, 1.0, 4.0])
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a = GaussianStats(mu1, q @ np.diag(ev1) @ q.T, 100)
    b = GaussianStats(mu2, q @ np.diag(ev2) @ q.T, 100)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(ev1) - np.sqrt(ev2)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    # one-dimensional case: (μ₁ − μ₂)² + (σ₁ − σ₂)²
    assert frechet_distance(GaussianStats(np.array([1.0]), np.array([[4.0]]), 2),
                            GaussianStats(np.array([-2.0]), np.array([[9.0]]), 2)) == pytest.approx(9 + 1)


def test_fewer_than_two_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 2 images"):
        statistics(np.zeros((1, 4)))
    write_images(tmp_path / "one", 1, seed=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        folder_statistics(tmp_path / "one", MeanColour())


# --------------------------------------------------------------------------- extraction and caching


def test_batches_group_equal_shapes_and_keep_order():
    rng = np.random.default_rng(3)
    images = [(rng.random((h, 32, 3)) * 255).astype(np.uint8) for h in (24, 24, 40, 24, 40, 40, 40)]
    extractor = MeanColour()
    one = embed_arrays(extractor, images, batch_size=1)
    for batch_size in (2, 3, 50):
        np.testing.assert_allclose(embed_arrays(extractor, images, batch_size=batch_size), one, rtol=1e-6, atol=1e-7)
    assert one.shape == (7, 6)


def test_folder_reading_follows_pytorch_fid_and_warns_on_jpeg(tmp_path):
    write_images(tmp_path / "set", 2, seed=0)
    (tmp_path / "set" / "notes.txt").write_text("not an image")
    (tmp_path / "set" / "sub").mkdir()
    write_images(tmp_path / "set" / "sub", 2, seed=1)  # not recursed into
    assert [p.name for p in frechet.list_images(tmp_path / "set")] == ["000.png", "001.png"]
    write_images(tmp_path / "set", 1, seed=2, ext="jpg")
    with pytest.warns(UserWarning, match="JPEG"):
        assert len(frechet.list_images(tmp_path / "set")) == 3


def test_reference_statistics_are_cached_by_content_extractor_and_preprocessing(tmp_path):
    files = write_images(tmp_path / "ref", 4, seed=4)
    extractor = MeanColour()
    first = folder_statistics(tmp_path / "ref", extractor)
    assert not first.cached and extractor.calls == 4
    again = folder_statistics(tmp_path / "ref", extractor)
    assert again.cached and extractor.calls == 4  # cache hit: nothing embedded
    np.testing.assert_array_equal(again.stats.sigma, first.stats.sigma)
    assert again.fingerprint == first.fingerprint and again.describe()["images"] == 4

    other = MeanColour()
    other.preprocess = "ToTensor, resized"  # another resize rule: another entry
    assert not folder_statistics(tmp_path / "ref", other).cached
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(files[0])  # changed content: recomputed
    changed = folder_statistics(tmp_path / "ref", extractor)
    assert not changed.cached and changed.fingerprint != first.fingerprint


# -------------------------------------------------------------------------- pytorch-fid's Inception


def test_inception_features_and_fid_equal_pytorch_fid(inception, inception_file, tmp_path, monkeypatch):
    """Same weights in both: our extraction (batches of 2) equals pytorch-fid's `get_activations` (batches
    of 3), and so does the Fréchet distance on them. (scipy's sqrtm of a 2048² matrix takes minutes on a
    busy 2-core machine, so the distances use the first 32 feature dimensions.)"""
    from pytorch_fid import inception as pf_inception
    from pytorch_fid.fid_score import calculate_frechet_distance, get_activations
    from safetensors.torch import load_file

    ref = write_images(tmp_path / "ref", 3, seed=5)
    out = write_images(tmp_path / "out", 2, seed=6, size=(40, 40))
    state = load_file(str(inception_file)) | {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}
    monkeypatch.setattr(pf_inception, "load_state_dict_from_url", lambda *a, **k: state)
    theirs_model = pf_inception.InceptionV3([3]).eval()
    theirs = get_activations(ref + out, theirs_model, batch_size=3, dims=2048, device="cpu", num_workers=0)

    ours = embed_files(inception, ref + out, batch_size=2, num_workers=0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert ours.shape == (5, 2048) and np.abs(ours).max() > 1e-3  # not a degenerate network

    a, b = theirs[:3, :32], theirs[3:, :32]
    expected = calculate_frechet_distance(b.mean(0), np.cov(b, rowvar=False), a.mean(0), np.cov(a, rowvar=False))
    assert frechet_distance(statistics(ours[3:, :32]), statistics(ours[:3, :32])) == pytest.approx(expected, rel=1e-4)


def test_folder_fid_equals_pytorch_fid_on_the_same_features(tmp_path):
    """`compare_folders` (cached statistics of both folders) against pytorch-fid's formula on the features."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    from harness.metrics.base import MetricContext
    from harness.metrics.fid import FidInceptionPbe

    ref = write_images(tmp_path / "ref", 5, seed=9)
    out = write_images(tmp_path / "out", 4, seed=10, size=(32, 32))
    extractor = MeanColour()
    metric = FidInceptionPbe(MetricContext({"inception_weights": "stub", "fid_batch_size": 2}, device="cpu"))
    metric.context.shared(("fid_inception", "stub"), lambda: extractor)
    result = metric.compare_folders(tmp_path / "ref", tmp_path / "out", num_workers=0)
    a, b = embed_files(extractor, ref, num_workers=0), embed_files(extractor, out, num_workers=0)
    expected = calculate_frechet_distance(b.mean(0), np.cov(b, rowvar=False), a.mean(0), np.cov(a, rowvar=False))
    assert result["value"] == pytest.approx(expected, rel=1e-4)
    assert result["reference"]["images"] == 5 and result["edited"]["images"] == 4


def test_inception_settings_record_the_weights_hash(inception, inception_file):
    from harness.metrics.base import MetricContext
    from harness.metrics.fid import FidInceptionPbe

    metric = FidInceptionPbe(MetricContext({"inception_weights": str(inception_file)}, device="cpu"))
    metric.context.shared(("fid_inception", str(inception_file)), lambda: inception)
    settings = metric.settings()
    assert settings["weights_sha256"] == frechet.file_sha256(inception_file) and settings["dims"] == 2048
    assert "bilinear 299x299" in settings["preprocess"] and settings["reference"].startswith("sources")


def test_local_weights_layouts_load_the_same_network(inception, inception_file, tmp_path):
    """A `.pth` in pytorch-fid's `InceptionV3` module layout (`blocks.*`, with fc) builds the same network."""
    wrapper = inception.model.state_dict()  # pytorch-fid's InceptionV3 module: keys `blocks.<b>.<i>.*`, fc absent
    assert all(k.startswith("blocks.") for k in wrapper)
    torch.save(wrapper, tmp_path / "wrapper.pth")
    again = InceptionPool3(str(tmp_path / "wrapper.pth"), "cpu")
    for (k, v), (k2, v2) in zip(inception.model.state_dict().items(), again.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert again.identity.startswith("pytorch-fid-inception:file:sha256:")


def test_weights_errors_name_both_options(tmp_path, monkeypatch):
    from urllib.error import URLError

    from pytorch_fid import inception as pf_inception

    with pytest.raises(InceptionWeightsError, match="not found.*inception_weights.*standard"):
        InceptionPool3(str(tmp_path / "missing.pth"))
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InceptionWeightsError, match="other.pth: not an Inception state dict"):
        InceptionPool3(str(tmp_path / "other.pth"))

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(pf_inception, "load_state_dict_from_url", offline)
    with pytest.raises(InceptionWeightsError) as info:
        InceptionPool3("standard")
    message = str(info.value)
    assert "allow network access" in message and "inception_weights=/path/" + FID_WEIGHTS_FILE in message
    assert "weights_path=" in message


def test_standard_weights_come_from_torch_hubs_cache(inception_file, tmp_path, monkeypatch):
    """pytorch-fid's standard path, offline: a file already in `<hub>/checkpoints/` is used, and hashed."""
    from safetensors.torch import load_file

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    torch.save(load_file(str(inception_file)) | {"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}, cached)
    extractor = InceptionPool3("standard")
    assert extractor.weights_sha256 == frechet.file_sha256(cached)
    assert extractor.identity == f"pytorch-fid-inception:file:sha256:{extractor.weights_sha256[:16]}"


# ------------------------------------------------------------------------------------------------ CLI


def test_metric_cli_compares_two_folders(tmp_path, capsys):
    from harness.metrics.__main__ import main

    write_images(tmp_path / "ref", 3, seed=7)
    write_images(tmp_path / "out", 3, seed=8)
    argv = ["compute", "fid@pbe", "--source", str(tmp_path / "ref"), "--edited", str(tmp_path / "out"),
            "weights_path=random_tiny", "features=smoke", "num_workers=0", "device=cpu"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["metric"] == "fid@pbe" and result["value"] > 0
    assert result["settings"]["network"] == "clip-vit-b32-tiny:random-seed42"
    assert result["reference"]["images"] == 3 and len(result["reference"]["fingerprint_sha256"]) == 64
    assert main(argv) == 0  # the second run reads both sets' statistics from the cache
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["value"] == result["value"]
    with pytest.raises(SystemExit, match="must be a folder"):
        main(["compute", "fid@pbe", "--source", str(tmp_path / "ref" / "000.png"), "--edited", str(tmp_path / "out")])
