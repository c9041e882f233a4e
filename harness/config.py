"""Compose configs from `conf/` outside a Hydra app (metric CLI, tests, notebooks)."""
from __future__ import annotations

import difflib
from typing import Any, Sequence

from harness.paths import CONF_DIR


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved root config with Hydra-style `overrides`, as a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    check_group_choices(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False) | {"out_dir": None}


def group_options(group: str) -> list[str]:
    """The option names of config group `group` (the YAML files under `conf/<group>/`, `a/b` for subfolders);
    a file whose name starts with `_` is a base the options share (`features/_base.yaml`), not an option."""
    root = CONF_DIR / group
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
                  if not p.name.startswith("_"))


def check_group_choices(args: Sequence[str]) -> None:
    """Refuse `group=name` overrides that name no file in `conf/<group>/`, suggesting the closest names.

    Hydra refuses them too, but only lists every option; this check runs first and says which option was
    probably meant (`model=sd14` → 'sd15', 'sd21'). It covers the project's own groups and stays out of
    the way when the command line adds config sources of its own (`--config-dir`, `hydra.searchpath`).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from harness.registry import UnknownNameError

    if any(a.startswith(("--config-dir", "-cd", "hydra.searchpath", "+hydra.searchpath")) for a in args):
        return
    candidates = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(candidates)
    except HydraException:
        return  # a syntax error: Hydra reports it with its own, precise message
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    for override in overrides:
        group = override.key_or_group
        if group not in groups or override.package is not None or override.is_delete():
            continue
        if override.is_sweep_override():
            names = list(override.sweep_string_iterator())
        else:
            value = override.value()
            names = value if isinstance(value, list) else [value]
        options = group_options(group)
        for name in names:
            if isinstance(name, str) and name not in options and name != "null":
                close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise UnknownNameError(f"unknown {group} {name!r} (no conf/{group}/{name}.yaml).{hint} "
                                       f"Valid {group} options: {', '.join(options)}")
