"""Well-known locations: the config directory, the cache, the shared test assets."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
SHARED_DIR = PROJECT_ROOT.parent / "shared"


def cache_dir() -> Path:
    """Per-user cache for derived files (tokenizer vocabularies, LoRA weights, FID statistics)."""
    root = os.environ.get("EDITLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "editlab"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
