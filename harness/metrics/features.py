"""Feature extractors shared by all metrics of a process (LPIPS nets, DIFT models), loaded once.

`MetricContext` is built from the config's `features` section:
- `lpips_backbone`: `standard` (the lpips package's own torchvision ImageNet download), a path to a
  torchvision `alexnet().features` state dict (.safetensors or .pth), or `random` (seeded random backbone
  with the package's real linear heads: smoke runs only);
- `dift_model`: a model config (one of conf/model/) for the DIFT UNet, SD 2.1 for real runs;
- `seed`: the per-sample seed for stochastic metrics (DIFT noise);
- `dift_compile`: run `md_dift@regiondrag`'s fixed-shape pass (UNet trunk, VAE encoder) through torch.compile
  (opt-in: rounding changes, one compilation per process; harness/metrics/dift.py);
- `source_cache`: featurise each source image once per protocol and reuse it across methods and reruns
  (opt-in: harness/metrics/source_cache.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from harness.determinism import GLOBAL_RNG_LOCK, seeded_global_rng
from harness.store import file_sha256

log = logging.getLogger(__name__)

# torchvision `alexnet().features` index → lpips 0.1.4 slice holding it
_ALEX_SLICES = {"0": "slice1", "3": "slice2", "6": "slice3", "8": "slice4", "10": "slice5"}


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def build_lpips_alex(backbone: str, seed: int = 0):
    """lpips v0.1 AlexNet LPIPS with the requested backbone; returns (model, identity string)."""
    import warnings

    import lpips

    warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
    if backbone == "standard":
        return lpips.LPIPS(net="alex", version="0.1", verbose=False).eval(), "lpips-0.1:alex:torchvision-imagenet"
    with seeded_global_rng(seed):
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    if backbone == "random":
        return model, f"lpips-0.1:alex:random-backbone-seed{seed}"
    state = load_state_dict_file(backbone)
    expected = {f"{i}.{p}" for i in _ALEX_SLICES for p in ("weight", "bias")}
    if set(state) != expected:
        raise ValueError(f"{backbone}: expected torchvision alexnet().features keys {sorted(expected)}, got {sorted(state)}")
    mapped = {f"{_ALEX_SLICES[k.split('.')[0]]}.{k}": v for k, v in state.items()}
    model.net.load_state_dict(mapped, strict=True)
    return model, f"lpips-0.1:alex:file-sha256:{file_sha256(backbone)[:16]}"


class MetricContext:
    """Holds the configuration and the lazily built, shared feature extractors.

    `kernels` are the run's non-default process-wide kernel choices (`determinism.kernel_choices`): they
    change rounding, so they are part of `key`, which every cached score is stored under."""

    def __init__(self, features: Mapping[str, Any] | None = None, device: str | torch.device = "auto",
                 kernels: Mapping[str, bool] | None = None) -> None:
        self.features = dict(features or {})
        self.kernels = dict(kernels or {})
        if str(device) == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self._cache: dict[Any, Any] = {}

    @property
    def key(self) -> str:
        """The feature settings' key of cached scores (unchanged from the features alone on a default run):
        with real-weights feature networks it includes their file hashes, so new weights recompute."""
        from harness.store import stable_hash

        key = {k: v for k, v in self.features.items() if k != "source_cache" or v}  # off: the keys from before it
        if self.kernels:
            key["kernels"] = self.kernels
        if self.weights:
            key["weights"] = self.weights
        return stable_hash(key)

    @property
    def weights(self) -> dict[str, str]:
        """The real-weights feature networks on this machine, `setting → source@revision sha256:<digest>`
        (harness/models/weights.py; hashes cached by path, size and mtime). Empty for random networks."""
        if "weights" not in self._cache:
            from harness.models.weights import feature_weights

            self._cache["weights"] = feature_weights(self.features)
        return self._cache["weights"]

    def recorded_settings(self, metric_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """A metric's settings as stored with each score: plus the weight hashes of the feature networks it
        reads (harness/models/weights.py `FEATURE_USERS`)."""
        from harness.models.sources import feature_used

        used = {k: v for k, v in self.weights.items() if feature_used(k.removeprefix("features."), [metric_id])}
        return {**settings, "weights": used} if used else dict(settings)

    @property
    def seed(self) -> int:
        return int(self.features.get("seed", 42))

    def dtype(self, wanted: torch.dtype) -> torch.dtype:
        """Half precision only on the GPU; on the CPU metrics run in float32 and the row records it."""
        return wanted if self.device.type == "cuda" else torch.float32

    def lpips_alex(self, dtype: torch.dtype):
        backbone = str(self.features.get("lpips_backbone", "standard"))
        key = ("lpips_alex", backbone, dtype)
        if key not in self._cache:
            with GLOBAL_RNG_LOCK:  # module constructors draw from the global generator (see harness/determinism.py)
                model, identity = build_lpips_alex(backbone)
            self._cache[key] = (model.to(self.device, dtype), identity)
        return self._cache[key]

    def shared(self, key: Any, build: Callable[[], Any]) -> Any:
        """The object cached under `key`, built once per context by `build()`: lets a metric module share
        its own networks (Inception, CLIP) between the metrics that use them without editing this class."""
        if key not in self._cache:
            with GLOBAL_RNG_LOCK:
                self._cache[key] = build()
        return self._cache[key]

    def dift_models(self, dtype: torch.dtype):
        from harness.models import load_models

        cfg = dict(self.features.get("dift_model") or {})
        if not cfg:
            raise ValueError("features.dift_model is not configured: choose the DIFT model with "
                             "model@features.dift_model=sd21 (or tiny_sd21), or features=standard")
        cfg["dtype"] = {torch.float16: "float16", torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
        cfg["device"] = str(self.device)
        with GLOBAL_RNG_LOCK:
            return load_models(cfg, "features.dift_model")
