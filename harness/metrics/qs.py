"""`qs@pbe`: Paint-by-Example's quality score (`eval_tool/gmm/gmm_score_coco.py` @52a7e37), optional: it
needs the user's GMM file (`features.qs_gmm`).

As released: each result goes through the `clip` package's ViT-B/32 `preprocess` and into the `InceptionV3`
class of `eval_tool/gmm/inception.py`, whose `forward` was replaced by `clip_model.encode_image` — so the
features are **CLIP ViT-B/32 image embeddings (512-d, fp16)**, and no Inception network is involved. (The
protocol notes, §5 and §7 item 15, describe Inception pool3 on top of the CLIP preprocessing; the code at
52a7e37 does not run Inception, and a 2048-d GMM could not score its 512-d features.) Each embedding is
scored with the GMM's log-likelihood (`score_samples`), s/300 clipped to [0, 1], ×100; the set value is
the mean. The script also drops a final partial batch of 50 from an unsorted file list (none for 3,500
results); here every result is scored.

GMM file: an `.npz` read with `allow_pickle=False`: `weights` (K,), `means` (K, D), `covariances` — (K, D, D)
`full`, (K, D) `diag`, (D, D) `tied` or (K,) `spherical` — and `covariance_type` (default `full`). The
released `coco2017_gmm_k20` is a pickle (the script calls `pickle.load`): convert it once with
`python -m harness.metrics.qs convert coco2017_gmm_k20 gmm.npz`, which unpickles through an allow-list
(scikit-learn's `GaussianMixture` state and numpy arrays and scalars; any other global is refused and
never imported). The log-likelihood is computed with scipy (scikit-learn is not needed).
"""
from __future__ import annotations

import io
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.metrics.base import Metric, MetricValue
from harness.metrics.clip_vit import ClipImageEmbedding, shared_clip_vit_b32
from harness.store import file_sha256
from harness.metrics.frechet import embed_arrays
from harness.registry import METRICS
from harness.types import ExemplarSample

COVARIANCE_TYPES = ("full", "diag", "tied", "spherical")
SCORE_MAX = 300.0  # the reference normalises log-likelihoods by (s − 0) / (300 − 0)


@dataclass(frozen=True)
class GaussianMixtureModel:
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    covariance_type: str = "full"

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def component_covariance(self, k: int) -> np.ndarray:
        """Σ_k as a (D, D) matrix or its (D,) diagonal (scipy accepts both)."""
        if self.covariance_type in ("full", "diag"):
            return self.covariances[k]
        if self.covariance_type == "tied":
            return self.covariances
        return np.full(self.dim, self.covariances[k])

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log p(x) per row, = scikit-learn's `GaussianMixture.score_samples`."""
        from scipy.special import logsumexp
        from scipy.stats import multivariate_normal

        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        per_component = np.stack([np.log(w) + multivariate_normal(self.means[k], self.component_covariance(k)).logpdf(x)
                                  for k, w in enumerate(self.weights)], axis=-1)
        return logsumexp(np.atleast_2d(per_component), axis=-1)


def load_gmm(path: str | Path) -> GaussianMixtureModel:
    """Read and validate a GMM `.npz`; errors name the file and the field."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: qs@pbe reads a GMM as .npz (pickles are not loaded); convert the released "
                         f"pickle with `python -m harness.metrics.qs convert {path} gmm.npz`")
    with np.load(path, allow_pickle=False) as data:
        fields = {k: data[k] for k in data.files}
    for key in ("weights", "means", "covariances"):
        if key not in fields:
            raise ValueError(f"{path}: field {key!r} is missing (need weights, means, covariances[, covariance_type])")
    ctype = str(fields.get("covariance_type", "full"))
    weights, means, covs = (np.asarray(fields[k], np.float64) for k in ("weights", "means", "covariances"))
    if ctype not in COVARIANCE_TYPES:
        raise ValueError(f"{path}: field 'covariance_type' must be one of {COVARIANCE_TYPES}, got {ctype!r}")
    if means.ndim != 2 or weights.shape != (means.shape[0],):
        raise ValueError(f"{path}: fields 'weights' {weights.shape} and 'means' {means.shape} must be (K,) and (K, D)")
    k, d = means.shape
    expected = {"full": (k, d, d), "diag": (k, d), "tied": (d, d), "spherical": (k,)}[ctype]
    if covs.shape != expected:
        raise ValueError(f"{path}: field 'covariances' has shape {covs.shape}; {ctype} needs {expected}")
    return GaussianMixtureModel(weights, means, covs, ctype)


@METRICS.register("qs@pbe")
class QsPbe(Metric):
    id = "qs@pbe"
    families = ("exemplar",)
    higher_is_better = True

    def gmm(self) -> tuple[GaussianMixtureModel, str]:
        path = self.context.features.get("qs_gmm")
        if not path:
            raise ValueError("qs@pbe needs a GMM file: set features.qs_gmm=/path/gmm.npz (Paint-by-Example's "
                             "coco2017_gmm_k20, converted with `python -m harness.metrics.qs convert`)")
        return self.context.shared(("qs_gmm", str(path)), lambda: (load_gmm(path), file_sha256(path)))

    def extractor(self) -> ClipImageEmbedding:
        return shared_clip_vit_b32(self.context)

    def compute(self, sample: ExemplarSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        gmm, _ = self.gmm()
        features = embed_arrays(self.extractor(), [edited])
        if features.shape[1] != gmm.dim:
            raise ValueError(f"qs@pbe: the GMM has {gmm.dim} dimensions, the CLIP ViT-B/32 embeddings "
                             f"{features.shape[1]} (the released score uses 512-d CLIP embeddings)")
        score = float(gmm.log_likelihood(features)[0])
        return MetricValue(float(np.clip(score / SCORE_MAX, 0.0, 1.0) * 100.0), info={"log_likelihood": score})

    def settings(self) -> dict[str, Any]:
        gmm, sha = self.gmm()
        return dict(self.extractor().describe(), preprocess=self.extractor().preprocess,
                    gmm={"file_sha256": sha, "components": len(gmm.weights), "covariance_type": gmm.covariance_type})


# ------------------------------------------------------------------------------- converting the pickle


class _GaussianMixtureState:
    """Stands in for scikit-learn's `GaussianMixture` while unpickling: keeps the state, runs nothing."""

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.state = dict(state)


class _AllowListUnpickler(pickle.Unpickler):
    _GMM = {("sklearn.mixture._gaussian_mixture", "GaussianMixture"), ("sklearn.mixture.gaussian_mixture", "GaussianMixture")}
    _ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    _ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("copyreg", "_reconstructor"), ("builtins", "object")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._GMM:
            return _GaussianMixtureState
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only a scikit-learn GaussianMixture "
                                     f"with numpy arrays is allowed)")


def convert_gmm_pickle(source: str | Path, target: str | Path) -> GaussianMixtureModel:
    """Pickled scikit-learn `GaussianMixture` → the `.npz` that `qs@pbe` reads (validated by loading it back)."""
    if Path(target).suffix != ".npz":
        raise ValueError(f"{target}: the converted GMM must be written to a .npz file")
    obj = _AllowListUnpickler(io.BytesIO(Path(source).read_bytes())).load()
    if not isinstance(obj, _GaussianMixtureState):
        raise ValueError(f"{source}: expected a pickled scikit-learn GaussianMixture, got {type(obj).__name__}")
    state = obj.state
    missing = [k for k in ("weights_", "means_", "covariances_", "covariance_type") if k not in state]
    if missing:
        raise ValueError(f"{source}: the GaussianMixture is not fitted or lacks {missing}")
    np.savez(target, weights=state["weights_"], means=state["means_"], covariances=state["covariances_"],
             covariance_type=np.array(state["covariance_type"]))
    return load_gmm(target)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "convert":
        sys.exit("usage: python -m harness.metrics.qs convert GMM_PICKLE OUT.npz")
    gmm = convert_gmm_pickle(sys.argv[2], sys.argv[3])
    print(f"wrote {sys.argv[3]}: {len(gmm.weights)} components, {gmm.dim} dims, {gmm.covariance_type} covariances")
