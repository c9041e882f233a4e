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
