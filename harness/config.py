"""Compose configs from `conf/` outside a Hydra app (metric CLI, tests, notebooks)."""
from __future__ import annotations

from typing import Any, Sequence

from harness.paths import CONF_DIR


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved root config with Hydra-style `overrides`, as a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False) | {"out_dir": None}
