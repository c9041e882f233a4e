"""Add-on components: weights that plug into a base model (IP-Adapter, LCM-LoRA, TAESD, a method's
trained modules) and follow its three kinds.

A component is described by `conf/component/<name>.yaml` (`ComponentSpec`) and built by the builder that
the module owning its `kind` registers with `@component_builder("<kind>")`. Which build a run gets follows
the base model, so a tiny test model never meets a full-size adapter and random weights never pose as real:

- `real`: the base model is `source=pretrained` → the component's real weights from `path` (hub id or local
  directory; `harness.models.weights.component_dir` resolves and verifies them against the weights lock like any model);
- `tiny`: the base model's random architecture is a tiny one → the `tiny_arch` build with seeded random weights;
- `random`: any other random base (`random_sd15`) → the full-size `random_arch` build, seeded.

`component_identity` names the build (`pretrained:h94/IP-Adapter/models/ip-adapter-plus_sd15.bin@rev`,
`random:ip_adapter_plus:seed0`) without building it, so a method's store key (`EditMethod.components`,
harness/planning.py) keeps results with and without a component, or with another one, apart.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from harness.models.hub import WeightsSource
from harness.paths import CONF_DIR

Variant = Literal["real", "random", "tiny"]
Builder = Callable[["ComponentSpec", str, Any], Any]

# kind → the module whose import registers its builder (imported on first use; a module that registers a
# kind adds its line here, or is imported before `load_component` asks for the kind)
KIND_MODULES: dict[str, str] = {
    "ip_adapter": "harness.diffusion.ip_adapter",
    "lcm_lora": "harness.diffusion.lcm",
    "taesd": "harness.diffusion.lcm",
    "lcm_unet": "harness.diffusion.lcm",
    "diffeditor_ip": "harness.diffusion.image_prompt_bank",
    "lightningdrag": "harness.diffusion.lightningdrag",
}
_BUILDERS: dict[str, Builder] = {}
_FILES: dict[str, Callable[["ComponentSpec"], list[str]]] = {}
_CACHE: dict[tuple[Any, str, str, str], Any] = {}


@dataclass(frozen=True)
class ComponentSpec:
    """One component config. `path`: hub id or local directory of the real weights; `subfolder` and
    `weight_name`: where inside it (as diffusers' `load_ip_adapter`/`load_lora_weights` take them);
    `revision` pins a hub commit; `published_as`: the id the paper used; `random_arch`/`tiny_arch`: the
    architecture keys the kind's builder knows for the full-size and tiny random builds; `seed`: their
    weights' seed."""

    name: str
    kind: str
    path: str | None = None
    subfolder: str | None = None
    weight_name: str | None = None
    revision: str | None = None
    published_as: str | None = None
    variant: str | None = None
    use_safetensors: bool = True
    random_arch: str | None = None
    tiny_arch: str | None = None
    seed: int = 0

    @classmethod
    def from_config(cls, data: Mapping[str, Any], where: str) -> "ComponentSpec":
        """Checked construction; `where` (the file) names the source in every error."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; valid: {', '.join(valid)}")
        for key in ("name", "kind"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"{where}: field {key!r} is required (a non-empty string)")
        for key in ("path", "subfolder", "weight_name", "revision", "published_as", "variant", "random_arch", "tiny_arch"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"{where}: field {key!r} must be a string or null, got {data[key]!r}")
        if not isinstance(data.get("seed", 0), int):
            raise ValueError(f"{where}: field 'seed' must be an integer, got {data['seed']!r}")
        return cls(**data)

    @classmethod
    def read(cls, name: str, conf_dir: Path | None = None) -> "ComponentSpec":
        """`conf/component/<name>.yaml`; the file's `name` must equal its stem."""
        import yaml

        path = (conf_dir or CONF_DIR) / "component" / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ValueError(f"unknown component {name!r} ({path} does not exist); known: {', '.join(known)}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of fields")
        data.setdefault("name", name)
        if data["name"] != name:
            raise ValueError(f"{path}: field 'name' is {data['name']!r}, must be the file's stem {name!r}")
        return cls.from_config(data, str(path))

    def arch(self, variant: str) -> str:
        key = self.tiny_arch if variant == "tiny" else self.random_arch
        if not key:
            field = "tiny_arch" if variant == "tiny" else "random_arch"
            raise ValueError(f"component {self.name!r}: no {field} for a {variant} build (conf/component/{self.name}.yaml)")
        return key

    def weights_source(self) -> WeightsSource | None:
        """What `python -m harness.models list|fetch|lock` and the lock check read for the real build."""
        if not self.path:
            return None
        _import_kind(self.kind)
        files_of = _FILES.get(self.kind)
        patterns = files_of(self) if files_of else [
            "/".join(p for p in (self.subfolder, self.weight_name or "*") if p)]
        return WeightsSource(f"component.{self.name}", self.name, self.path, f"component:{self.kind}", self.revision,
                             self.variant, self.published_as, self.use_safetensors, patterns=tuple(patterns))


def component_builder(kind: str, files: Callable[[ComponentSpec], list[str]] | None = None) -> Callable[[Builder], Builder]:
    """Register the builder of `kind`: `(spec, variant, models) -> object`, variant one of real/random/tiny,
    `models` the base `DiffusionModels` (device, dtype, the UNet to attach to). `files`: the hub file
    patterns the real build reads (default `subfolder/weight_name`), for fetch and the weights lock."""
    def register(fn: Builder) -> Builder:
        if kind in _BUILDERS and _BUILDERS[kind] is not fn:
            raise ValueError(f"component kind {kind!r} is registered twice")
        _BUILDERS[kind] = fn
        if files is not None:
            _FILES[kind] = files
        return fn
    return register


def _base_spec(base: Any):
    return getattr(base, "spec", base)  # DiffusionModels or ModelSpec


def variant_for(base: Any) -> Variant:
    """Which build goes with the base model (a `DiffusionModels` or a `ModelSpec`)."""
    spec = _base_spec(base)
    if spec.source == "pretrained":
        return "real"
    return "tiny" if str(spec.arch).startswith("tiny") else "random"


def component_identity(name: str | ComponentSpec, base: Any) -> str:
    """What `name` is on `base`, without building it: part of store keys and records."""
    spec = name if isinstance(name, ComponentSpec) else ComponentSpec.read(name)
    variant = variant_for(base)
    if variant == "real":
        where = "/".join(p for p in (spec.path, spec.subfolder, spec.weight_name) if p)
        return f"pretrained:{where}" + (f"@{spec.revision}" if spec.revision else "")
    return f"random:{spec.arch(variant)}:seed{spec.seed}"


def _import_kind(kind: str) -> None:
    if kind not in _BUILDERS and kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[kind])


def builder(kind: str) -> Builder:
    _import_kind(kind)
    if kind not in _BUILDERS:
        raise ValueError(f"no builder registered for component kind {kind!r} (known: {', '.join(sorted(_BUILDERS))}); "
                         "import the module that defines it, or add it to harness.models.components.KIND_MODULES")
    return _BUILDERS[kind]


def load_component(name: str | ComponentSpec, models: Any) -> Any:
    """The component `name` built for the base `models` (real, full-size random or tiny, see the module
    docstring), once per process per (name, base identity, device, dtype)."""
    spec = name if isinstance(name, ComponentSpec) else ComponentSpec.read(name)
    key = (spec, models.spec.identity, str(models.device), str(models.dtype))
    if key not in _CACHE:
        _CACHE[key] = builder(spec.kind)(spec, variant_for(models), models)
    return _CACHE[key]


def clear_cache() -> None:
    """Tests: forget every built component."""
    _CACHE.clear()


def component_names(conf_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in ((conf_dir or CONF_DIR) / "component").glob("*.yaml"))
