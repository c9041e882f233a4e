"""What a run records about where it ran: library versions, device, git commit."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from functools import lru_cache
from typing import Any

from harness.paths import PROJECT_ROOT

PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "lpips", "open-clip-torch", "numpy", "pillow",
            "opencv-python-headless", "peft", "hydra-core", "pandas", "scipy", "torchmetrics", "pytorch-fid")


@lru_cache(maxsize=None)
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=None)
def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        info["gpu_count"] = torch.cuda.device_count()
    return info
