"""Which weights a run loads: its methods' models, their auxiliary networks and the feature networks its
metrics read, as `WeightsSource`s (harness/models/hub.py) — what the weights lock (harness/models/weights.py)
hashes, records and checks. Reading configs only: nothing here loads or downloads anything.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.models.hub import WeightsSource, split_revision
from harness.models.spec import ModelSpec

RANDOM_SPECS = ("random", "random_tiny")
# string settings that name a network, and the kind of checkpoint each is (method settings: per method)
FEATURE_NETWORKS = {"clip_vit_b32": "transformers", "clip_vitl14": "transformers", "dino_vitb8": "transformers",
                    "dinov2_base": "transformers"}
METHOD_NETWORKS = {"vae": "diffusers_model", "style_image_encoder": "transformers", "captioner": "transformers"}
# which metric ids load each feature network (fnmatch patterns), so a lock and a score row cover only the
# networks a run's metrics read (features=standard names them all). A metric that loads a feature network
# adds its id here.
FEATURE_USERS = {"dift_model": ("md_dift@*", "md_dift_*@*"),
                 "clip_vit_b32": ("clip_region@pbe", "qs@pbe", "fid@pbe", "clip_gt@*"),
                 "clip_vitl14": ("pie_clip_*",), "dino_vitb8": ("pie_structure_distance",),
                 "dinov2_base": ("md_dino@*",)}


def feature_used(name: str, metric_ids: Iterable[str] | None) -> bool:
    """Whether feature network `name` is read by one of `metric_ids` (None: by any metric)."""
    if metric_ids is None:
        return True
    return any(fnmatch.fnmatch(m, p) for m in metric_ids for p in FEATURE_USERS.get(name, ("*",)))




def model_source(cfg: Mapping[str, Any], setting: str) -> WeightsSource | None:
    """The weights a `model` config loads (None for random builds)."""
    spec = cfg if isinstance(cfg, ModelSpec) else ModelSpec.from_config(cfg, setting)
    if spec.source != "pretrained":
        return None
    return WeightsSource(setting, spec.name, str(spec.path), spec.pipeline, spec.revision, spec.variant,
                         spec.published_as, bool(spec.use_safetensors))


def network_source(value: Any, setting: str, kind: str) -> WeightsSource | None:
    """The weights a string setting (`features.clip_vit_b32`, `method.gooddrag.vae`) loads; None for random
    stand-ins and `default` (the model's own VAE)."""
    if not isinstance(value, str) or value in RANDOM_SPECS or value in ("default", "", "standard"):
        return None
    location, revision = split_revision(value)
    return WeightsSource(setting, value, location, kind, revision)


def feature_sources(features: Mapping[str, Any], metric_ids: Iterable[str] | None = None) -> list[WeightsSource]:
    """The real-weights feature networks `metric_ids` read (None: all that `features` names)."""
    metric_ids = None if metric_ids is None else list(metric_ids)
    sources = []
    if features.get("dift_model") and feature_used("dift_model", metric_ids):
        sources.append(model_source(features["dift_model"], "features.dift_model"))
    for name, kind in FEATURE_NETWORKS.items():
        if feature_used(name, metric_ids):
            sources.append(network_source(features.get(name), f"features.{name}", kind))
    return [s for s in sources if s is not None]


def run_sources(cfg: Mapping[str, Any], plans: Iterable[Any] | None = None) -> list[WeightsSource]:
    """Every real-weights source a composed run config may load: the model of each method (the run's or
    the method's own), the methods' auxiliary networks (only on a real-weights model: random models keep
    random stand-ins), and the feature networks its `metrics` read."""
    run_model = dict(cfg.get("model") or {})
    sources: list[WeightsSource | None] = []
    methods = dict(cfg.get("method") or {})
    if plans is None:
        from harness.registry import METHODS

        models = {name: (dict((params or {}).get("model") or run_model) if METHODS.get(name).needs_model else None)
                  for name, params in methods.items()}
    else:
        models = {plan.name: plan.model for plan in plans}
    for name, model in models.items():
        if model is None:
            continue
        own = dict((methods.get(name) or {}).get("model") or {})
        source = model_source(model, f"method.{name}.model" if own else "model")
        sources.append(source)
        if source is None:
            continue
        for param, kind in METHOD_NETWORKS.items():
            sources.append(network_source((methods.get(name) or {}).get(param), f"method.{name}.{param}", kind))
        sources += component_sources(name, methods.get(name) or {})
    metrics = cfg.get("metrics")
    sources += feature_sources(dict(cfg.get("features") or {}), None if metrics is None else list(metrics))
    unique: dict[tuple, WeightsSource] = {}
    for s in sources:
        if s is not None:
            unique.setdefault((lock_key(s), s.revision, s.variant, s.kind), s)
    return list(unique.values())


def component_sources(method: str, params: Mapping[str, Any]) -> list[WeightsSource | None]:
    """The real weights of the add-on components method `method` loads with `params` (on a real model)."""
    from harness.models.components import ComponentSpec
    from harness.registry import METHODS

    names = METHODS.get(method).build({k: v for k, v in params.items() if k != "model"}).components()
    return [ComponentSpec.read(n).weights_source() for n in names]


def lock_key(source: WeightsSource) -> str:
    """A source's entry in the lock: the hub id, or a local directory's absolute path."""
    return str(Path(source.location).expanduser().resolve()) if source.is_local else source.location
