"""Write any model config as a standard diffusers directory (`save_pretrained`, safetensors).

Two uses: a random config (`tiny`, `tiny_sd21`, `random_sd15`) exported and loaded back through
`model.path=DIR` exercises the real-weights loading path offline with the same weights; and a real
config is written as a self-contained directory (e.g. Paint-by-Example's pickled `.bin` files as
safetensors) for a machine without network access.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def export(cfg: Mapping[str, Any], directory: str | Path) -> Path:
    """Build `cfg` in float32 on the CPU and `save_pretrained` it to `directory`."""
    from harness.models.provider import ModelSpec, load_models, no_model_cache

    spec = ModelSpec.from_config(dict(cfg, device="cpu", dtype="float32"))
    directory = Path(directory).expanduser().resolve()
    with no_model_cache():
        models = load_models(spec)
        models.pipe.save_pretrained(str(directory), safe_serialization=True)
        _keep_scheduler_defaults_implicit(models.pipe.scheduler.config, directory / "scheduler" / "scheduler_config.json")
    return directory


def _keep_scheduler_defaults_implicit(config: Mapping[str, Any], path: Path) -> None:
    """Drop the keys the in-memory scheduler left at their defaults (`_use_default_values`), as the hub's
    files do: `save_pretrained` writes `timestep_spacing: leading` explicitly, and schedulers built
    `from_config` then inherit it, so RegionDrag would run on other timesteps than with the random build
    (../shared/docs/models.md §2.1)."""
    defaults = set(config.get("_use_default_values") or ())
    if not defaults or not path.is_file():
        return
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items() if k not in defaults}, indent=2, sort_keys=True) + "\n")

