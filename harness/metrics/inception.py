"""pytorch-fid's InceptionV3 (pool3, 2048-d) with three ways to get its weights (models.md §5).

`inception_weights` (features config):
- `standard`: pytorch-fid's own download of `pt_inception-2015-12-05-6726825d.pth` into torch hub's cache
  (`$TORCH_HOME/hub/checkpoints/`), reused when already there;
- a path to a local state dict (`.pth` or `.safetensors`): the torchvision `Inception3` key layout of the
  pytorch-fid file (`Conv2d_1a_3x3.conv.weight`, …, `Mixed_7c.*`), or the layout of a saved pytorch-fid
  `InceptionV3` module (`blocks.0.0.conv.weight`, …). `AuxLogits.*` and the 1008-class `fc` (unused by pool3
  features) may be absent; they are ignored;
- `random`: the same structure with seeded Kaiming-normal convolutions (smoke runs and tests only).

The network is pytorch-fid's `InceptionV3([3])` itself (input [0, 1] RGB, bilinear resize to 299×299 with
`align_corners=False`, then 2x − 1); a local or random state dict goes in through pytorch-fid's own
loading call, substituted for the download. pytorch-fid checks no hash: every result records the SHA-256
of the weights file, and the identity names pytorch-fid's file when its hash prefix matches.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image

from harness.determinism import seeded_global_rng
from harness.metrics.features import load_state_dict_file
from harness.store import file_sha256

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"  # torch hub names files by the first 8 hex digits of their SHA-256
FC_SHAPE = (1008, 2048)
PREPROCESS = "PIL RGB, ToTensor [0,1] at native size, bilinear 299x299 (align_corners=False), 2x-1 (pytorch-fid InceptionV3)"
# pytorch-fid's `InceptionV3.blocks` → the torchvision Inception3 modules they hold (pooling layers have no weights)
_BLOCKS = (("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"), ("Conv2d_3b_1x1", "Conv2d_4a_3x3"),
           ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
           ("Mixed_7a", "Mixed_7b", "Mixed_7c"))


class InceptionWeightsError(RuntimeError):
    """The Inception weights cannot be obtained; the message names both ways to provide them."""


def hub_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def _to_torchvision_layout(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Normalise a state dict to the torchvision Inception3 layout pytorch-fid loads, with a zero `fc`."""
    if any(k.startswith("blocks.") for k in state):
        renamed = {}
        for key, value in state.items():
            _, block, index, rest = key.split(".", 3)
            renamed[f"{_BLOCKS[int(block)][int(index)]}.{rest}"] = value
        state = renamed
    state = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
    if not any(k.startswith("Mixed_7c.") for k in state):
        raise InceptionWeightsError(f"{source}: not an Inception state dict (no Mixed_7c.* keys); expected "
                                    f"pytorch-fid's {FID_WEIGHTS_FILE} or a torchvision Inception3 layout")
    return state | {"fc.weight": torch.zeros(FC_SHAPE), "fc.bias": torch.zeros(FC_SHAPE[0])}


def random_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """The FID Inception structure with seeded Kaiming-normal convolutions (features of order 1)."""
    import torchvision

    with seeded_global_rng(seed):
        net = torchvision.models.inception_v3(num_classes=FC_SHAPE[0], aux_logits=False, weights=None, init_weights=False)
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net.state_dict()


@contextlib.contextmanager
def _serve_state_dict(state: dict[str, torch.Tensor]) -> Iterator[None]:
    """pytorch-fid builds its FID Inception and loads the download in one function (`fid_inception_v3`);
    hand it `state` instead of the download so that its structure and strict loading are used unchanged."""
    from unittest import mock

    from pytorch_fid import inception

    with mock.patch.object(inception, "load_state_dict_from_url", lambda *args, **kwargs: state):
        yield


def build_fid_inception(weights: str, seed: int = 0) -> tuple[torch.nn.Module, str, str | None]:
    """pytorch-fid `InceptionV3([3])` in eval mode; returns (model, identity, weights-file SHA-256 or None)."""
    from pytorch_fid.inception import InceptionV3

    if weights == "random":
        with _serve_state_dict(random_state_dict(seed)):
            return InceptionV3([3]).eval(), f"pytorch-fid-inception:random-seed{seed}", None
    if weights == "standard":
        try:
            model = InceptionV3([3]).eval()
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise InceptionWeightsError(
                f"cannot obtain pytorch-fid's Inception weights ({type(exc).__name__}: {exc}); {hub_weights_path()} "
                f"{'exists but did not load' if hub_weights_path().is_file() else 'is not cached and the download failed'}. "
                f"Either allow network access once (pytorch-fid downloads {FID_WEIGHTS_FILE} into torch hub's cache) "
                f"or use a local copy: features.inception_weights=/path/{FID_WEIGHTS_FILE} "
                f"(weights_path=... on `python -m harness.metrics compute`)") from exc
        sha = file_sha256(hub_weights_path())
        return model, _identity(sha), sha
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(
            f"Inception weights file not found: {path}. Set features.inception_weights (weights_path=... on the "
            f"metric CLI) to a local {FID_WEIGHTS_FILE} / torchvision Inception3 state dict, or to 'standard' "
            f"for pytorch-fid's download")
    state = _to_torchvision_layout(load_state_dict_file(path), str(path))
    try:
        with _serve_state_dict(state):
            model = InceptionV3([3]).eval()
    except RuntimeError as exc:
        raise InceptionWeightsError(f"{path}: does not fit pytorch-fid's FID Inception: {exc}") from exc
    sha = file_sha256(path)
    return model, _identity(sha), sha


def _identity(sha256: str) -> str:
    name = "pt_inception-2015-12-05" if sha256.startswith(FID_WEIGHTS_SHA256_PREFIX) else "file"
    return f"pytorch-fid-inception:{name}:sha256:{sha256[:16]}"


def rgb_to_tensor(image: Image.Image) -> torch.Tensor:
    """pytorch-fid's image loading: `.convert('RGB')` then `ToTensor` (float [0, 1], native size)."""
    from torchvision.transforms.functional import to_tensor

    return to_tensor(image.convert("RGB"))


class InceptionPool3:
    """Feature extractor (`harness.metrics.frechet.FeatureExtractor`) on pytorch-fid's InceptionV3, float32."""

    preprocess = PREPROCESS
    dim = 2048
    transform = staticmethod(rgb_to_tensor)

    def __init__(self, weights: str = "standard", device: str | torch.device = "cpu", seed: int = 0) -> None:
        model, self.identity, self.weights_sha256 = build_fid_inception(weights, seed)
        self.device = torch.device(device)
        self.model = model.to(self.device).requires_grad_(False)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch.to(self.device, torch.float32))[0][:, :, 0, 0]

    def describe(self) -> dict[str, Any]:
        return {"network": self.identity, "weights_sha256": self.weights_sha256, "dims": self.dim,
                "preprocess": self.preprocess, "dtype": "float32"}
