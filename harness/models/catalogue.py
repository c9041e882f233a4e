"""Every real-weights setting the configs name: the model configs (conf/model/), the add-on components
(conf/component/) and the network settings of the feature sets (conf/features/) and methods (conf/method/),
for `python -m harness.models list|fetch`.

Read from the YAML files directly (no Hydra composition), so the listing covers configs no single run
composes together.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.models.hub import WeightsSource
from harness.models.sources import FEATURE_NETWORKS, METHOD_NETWORKS, model_source, network_source
from harness.paths import CONF_DIR
from harness.registry import UnknownNameError


@dataclass(frozen=True)
class Entry:
    """One row of the listing: `name` is what `fetch` and `export` take (a model config name, or the
    network's hub id/directory); `source` is None for random-weight configs."""

    name: str
    setting: str
    source: WeightsSource | None
    random: str | None = None  # what a random config builds (`tiny`, `sd15`, ...)


def _load(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    return data


def model_configs() -> dict[str, dict[str, Any]]:
    return {p.stem: _load(p) for p in sorted((CONF_DIR / "model").glob("*.yaml"))}


def entries() -> list[Entry]:
    rows = []
    for name, cfg in model_configs().items():
        source = model_source(cfg, "model")
        rows.append(Entry(name, "model", source, None if source else f"{cfg.get('pipeline', 'stable_diffusion')}:{cfg.get('arch')}"))
    rows += component_entries()
    seen: set[str] = set()
    groups = [("features", FEATURE_NETWORKS, None), ("method", METHOD_NETWORKS, "method")]
    for group, networks, prefix in groups:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            cfg = _load(path)
            for key, kind in networks.items():
                setting = f"{group}.{path.stem}.{key}" if prefix else f"features.{key}"
                source = network_source(cfg.get(key), setting, kind)
                if source is not None and source.config not in seen:
                    seen.add(source.config)
                    rows.append(Entry(source.config, setting, source))
    return rows


def component_entries() -> list[Entry]:
    """One row per `conf/component/*.yaml`: its real weights, or what its random builds are."""
    from harness.models.components import ComponentSpec, component_names

    rows = []
    for name in component_names():
        spec = ComponentSpec.read(name)
        source = spec.weights_source()
        rows.append(Entry(name, f"component.{name}", source,
                          None if source else f"{spec.kind}:{spec.random_arch}/{spec.tiny_arch}"))
    return rows


def find(name: str) -> Entry:
    """The entry `name` names: a model config, or a network's hub id as the configs spell it."""
    for entry in entries():
        if entry.name == name:
            return entry
    valid = [e.name for e in entries()]
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownNameError(f"unknown model or network {name!r}.{hint} `python -m harness.models list` shows all "
                           f"{len(valid)}.")
