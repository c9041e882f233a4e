"""`clip_region@pbe` (box crop rule, resize, score) and `qs@pbe` (GMM score, file loading, pickle
conversion through an allow-list) on a tiny random CLIP ViT-B/32."""
from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import torch

from harness.metrics.base import MetricContext
from harness.metrics.clip_region import ClipRegionPbe, reference_input, region_box, region_crop
from harness.metrics.clip_vit import clip_normalize
from harness.metrics.frechet import embed_arrays
from harness.metrics.qs import GaussianMixtureModel, QsPbe, convert_gmm_pickle, load_gmm
from harness.types import ExemplarSample


@pytest.fixture(scope="module")
def context():
    return MetricContext({"clip_vit_b32": "random_tiny", "seed": 0}, device="cpu")


def sample(h=64, w=48, box=(10, 30, 5, 40), seed=0) -> ExemplarSample:
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), bool)
    mask[box[0]:box[1], box[2]:box[3]] = True
    return ExemplarSample("test/coco/1", (rng.random((h, w, 3)) * 255).astype(np.uint8), mask,
                          (rng.random((37, 52, 3)) * 255).astype(np.uint8))


def test_region_box_is_first_to_last_pixel_end_exclusive():
    mask = np.zeros((20, 30), bool)
    mask[3:9, 4:12] = True  # rows 3..8, columns 4..11
    assert region_box(mask) == (3, 8, 4, 11)  # the box's last row and column are left out, as released
    # non-rectangular: the columns come from the first and the last pixel in raster order only
    mask = np.zeros((20, 30), bool)
    mask[2, 3:6] = True
    mask[3:7, 1:20] = True
    mask[7, 8:13] = True  # first pixel (2, 3), last pixel (7, 12)
    assert region_box(mask) == (2, 7, 3, 12)
    mask[7, 8:13], mask[7, 0] = False, True  # last pixel (7, 0): left of the first one
    with pytest.raises(ValueError, match=r"crop \[2:7, 3:0\] is empty"):
        region_box(mask)
    with pytest.raises(ValueError, match="empty"):
        region_box(np.zeros((4, 4), bool))
    one_row = np.zeros((10, 10), bool)
    one_row[4, 2:8] = True
    with pytest.raises(ValueError, match=r"crop \[4:4, 2:7\] is empty"):
        region_box(one_row)


def test_region_crop_matches_a_hand_computation():
    from torchvision import transforms as T

    s = sample(box=(10, 30, 5, 40))
    x = torch.from_numpy(s.image.astype(np.float32)).permute(2, 0, 1) / 255.0
    hand = clip_normalize(x)[:, 10:29, 5:39]  # rows 10..28, columns 5..38
    expected = T.Resize([224, 224], antialias=False)(hand)  # torchvision 0.12's tensor Resize
    np.testing.assert_allclose(region_crop(s.image, s.mask)[0].numpy(), expected.numpy(), atol=1e-6)
    ref = reference_input(s.reference)
    assert ref.shape == (1, 3, 224, 224)


def test_clip_region_score_is_100_cos_of_the_embeddings(context):
    metric = ClipRegionPbe(context)
    s = sample()
    edited = np.roll(s.image, 3, axis=1)
    value = metric.compute(s, edited, {})
    model = metric.extractor().model
    with torch.no_grad():
        a = model(pixel_values=region_crop(edited, s.mask)).image_embeds[0]
        b = model(pixel_values=reference_input(s.reference)).image_embeds[0]
    assert value.value == pytest.approx(100 * float(torch.cosine_similarity(a, b, dim=0)), rel=1e-4)
    assert value.info["box"] == [10, 29, 5, 39]
    assert metric.compute(s, edited, {}).value == value.value  # deterministic
    assert metric.settings()["network"] == "clip-vit-b32-tiny:random-seed0"


def write_gmm(path, **fields):
    np.savez(path, **fields)
    return path


def test_gmm_log_likelihood_matches_the_closed_form(tmp_path):
    rng = np.random.default_rng(1)
    means, var = rng.normal(size=(2, 3)), np.array([[0.5, 1.0, 2.0], [1.5, 0.2, 0.7]])
    weights = np.array([0.3, 0.7])
    x = rng.normal(size=(4, 3))
    density = sum(w * np.exp(-0.5 * np.sum((x - m) ** 2 / v, axis=1)) / np.sqrt(np.prod(2 * np.pi * v))
                  for w, m, v in zip(weights, means, var))
    diag = load_gmm(write_gmm(tmp_path / "diag.npz", weights=weights, means=means, covariances=var, covariance_type="diag"))
    np.testing.assert_allclose(diag.log_likelihood(x), np.log(density), rtol=1e-10)
    full = GaussianMixtureModel(weights, means, np.stack([np.diag(v) for v in var]), "full")
    np.testing.assert_allclose(full.log_likelihood(x), np.log(density), rtol=1e-10)


def test_qs_is_clipped_log_likelihood_over_300(context, tmp_path):
    metric = QsPbe(MetricContext(dict(context.features), device="cpu"))
    metric.context._cache = context._cache  # share the CLIP network
    s = sample()
    embedding = embed_arrays(metric.extractor(), [s.image])
    dim = embedding.shape[1]
    # one component centred on the embedding with variance v: log p = −(D/2)·log(2πv); choose it = 150
    v = np.exp(-150 * 2 / dim) / (2 * np.pi)
    path = write_gmm(tmp_path / "gmm.npz", weights=np.ones(1), means=embedding.astype(np.float64),
                     covariances=np.full((1, dim), v), covariance_type="diag")
    metric.context.features["qs_gmm"] = str(path)
    value = metric.compute(s, s.image, {})
    assert value.info["log_likelihood"] == pytest.approx(150, rel=1e-6)
    assert value.value == pytest.approx(50.0, rel=1e-6)
    assert metric.settings()["gmm"]["components"] == 1
    # far away: clipped at 0
    far = write_gmm(tmp_path / "far.npz", weights=np.ones(1), means=embedding + 100.0, covariances=np.full((1, dim), v),
                    covariance_type="diag")
    metric.context.features["qs_gmm"] = str(far)
    assert metric.compute(s, s.image, {}).value == 0.0
    wrong = write_gmm(tmp_path / "wrong.npz", weights=np.ones(1), means=np.zeros((1, dim + 1)),
                      covariances=np.ones((1, dim + 1)), covariance_type="diag")
    metric.context.features["qs_gmm"] = str(wrong)
    with pytest.raises(ValueError, match=f"GMM has {dim + 1} dimensions"):
        metric.compute(s, s.image, {})


def test_gmm_file_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(ValueError, match="qs@pbe reads a GMM as .npz"):
        load_gmm(tmp_path / "coco2017_gmm_k20")
    with pytest.raises(ValueError, match="'means' is missing"):
        load_gmm(write_gmm(tmp_path / "a.npz", weights=np.ones(2), covariances=np.ones((2, 3))))
    with pytest.raises(ValueError, match=r"'covariances' has shape \(2, 3\); full needs \(2, 3, 3\)"):
        load_gmm(write_gmm(tmp_path / "b.npz", weights=np.ones(2), means=np.zeros((2, 3)), covariances=np.ones((2, 3))))
    with pytest.raises(ValueError, match="qs_gmm"):
        QsPbe(MetricContext({}, device="cpu")).compute(sample(), sample().image, {})


def test_gmm_pickle_converts_through_an_allow_list(tmp_path, monkeypatch):
    """A pickled scikit-learn GaussianMixture (faked here: scikit-learn is not needed) converts; any other
    global is refused without being imported."""
    module = types.ModuleType("sklearn.mixture._gaussian_mixture")

    class GaussianMixture:
        pass

    GaussianMixture.__module__, GaussianMixture.__qualname__ = module.__name__, "GaussianMixture"
    module.GaussianMixture = GaussianMixture
    for name in ("sklearn", "sklearn.mixture"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    gmm = GaussianMixture()
    gmm.__dict__.update(weights_=np.array([0.4, 0.6]), means_=np.zeros((2, 3)), covariances_=np.stack([np.eye(3)] * 2),
                        covariance_type="full", n_iter_=7, lower_bound_=np.float64(-1.5), _sklearn_version="1.3.0")
    (tmp_path / "gmm.pkl").write_bytes(pickle.dumps(gmm, protocol=4))
    converted = convert_gmm_pickle(tmp_path / "gmm.pkl", tmp_path / "gmm.npz")
    assert converted.dim == 3 and converted.covariance_type == "full"
    np.testing.assert_array_equal(load_gmm(tmp_path / "gmm.npz").weights, [0.4, 0.6])

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo should-not-run",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil(), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global (posix|os|nt).system"):
        convert_gmm_pickle(tmp_path / "evil.pkl", tmp_path / "evil.npz")
