"""Test configuration: offline, small, deterministic.

Integration tests read `../shared/data` and `../shared/assets` (relative to the project root) and skip
cleanly when they are absent.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from harness.paths import SHARED_DIR  # noqa: E402

LPIPS_ASSET = SHARED_DIR / "assets" / "lpips" / "alexnet_features.safetensors"


def shared_path(*parts: str) -> Path:
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available (../shared missing)")
    return path


def _single_torch_thread():
    """One intra-op thread for the block's tests. On a shared 2-core machine two threads spin against each
    other (one runs tiny models several times faster), and backpropagation through the tiny UNet is
    bit-reproducible on the CPU only with one thread: the input gradient of a stride-2 convolution onto a
    1×1 map sums in a varying order with several."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Per test: `def test_x(one_thread)`; per module: `pytestmark = pytest.mark.usefixtures("one_thread_module")`.
one_thread = pytest.fixture(_single_torch_thread)
one_thread_module = pytest.fixture(scope="module")(_single_torch_thread)


@pytest.fixture(scope="session")
def tiny_models():
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from harness.models import load_models

    return load_models({"name": "tiny", "source": "random", "arch": "tiny", "seed": 0, "device": "cpu"})


@pytest.fixture(scope="session")
def tiny_sd21_models():
    from harness.models import load_models

    return load_models({"name": "tiny_sd21", "source": "random", "arch": "tiny_sd21", "seed": 0, "device": "cpu"})


@pytest.fixture(scope="session")
def smoke_features():
    return {"lpips_backbone": "random", "seed": 42,
            "dift_model": {"name": "tiny_sd21", "source": "random", "arch": "tiny_sd21", "seed": 0, "dtype": "float16"}}
