"""Planning a run before any work: every configured method, model and metric resolved and checked against
the dataset, so that unknown names and incompatible pairings fail before a model is loaded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from harness.data.base import Dataset
from harness.metrics.base import Metric
from harness.models.provider import ModelSpec
from harness.registry import METHODS, METRICS
from harness.store import stable_hash


class ConfigError(ValueError):
    """A configuration that cannot run (unknown names, incompatible pairings); raised before any work."""


@dataclass
class MethodPlan:
    """One method variant of a run: what to build, and where its outputs live. `model` is the model
    config it runs on: the run's `model`, or the method's own `model` entry (exemplar methods need
    their own pipelines: `method.paint_by_example.model`)."""

    name: str
    params: dict[str, Any]
    cls: Any
    key: str
    description: dict[str, Any]
    model: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.name


def plan_methods(method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], dataset: Dataset,
                 kernels: Mapping[str, bool] | None = None) -> list[MethodPlan]:
    """Resolve every configured method (and check it fits the dataset) without loading any model.
    `kernels`: the run's non-default kernel choices (`determinism.kernel_choices`), part of each store key
    because they change rounding."""
    plans = []
    run_spec = plan_model(model_cfg)
    for name, params in (method_cfg or {}).items():
        cls = METHODS.get(name)
        if dataset.family not in cls.families:
            raise ConfigError(f"method {name!r} edits {'/'.join(cls.families)} samples; dataset "
                              f"{dataset.name!r} holds {dataset.family} samples")
        params = dict(params or {})
        own_model = params.pop("model", None)
        model = dict(own_model or model_cfg) if cls.needs_model else None
        spec = (plan_model(own_model) if own_model else run_spec) if model is not None else None
        try:
            if spec is not None:
                params, note = cls.for_model(params, spec)
                if note:
                    print(f"[plan] {name}: {note}")
            method = cls.build(params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"method {name!r}: invalid config: {exc}") from exc
        description = method.describe()
        if model is not None:
            description["model"] = {"identity": spec.identity, "dtype": str(spec.resolved_dtype()).replace("torch.", "")}
            if spec.memory_format:
                description["model"]["memory_format"] = spec.memory_format
            if method.components():
                from harness.models.components import component_identity

                try:
                    description["components"] = {c: component_identity(c, spec) for c in method.components()}
                except ValueError as exc:
                    raise ConfigError(f"method {name!r}: {exc}") from exc
        if kernels:
            description["kernels"] = dict(kernels)
        plans.append(MethodPlan(name, params, cls, f"{name}-{stable_hash(description, 8)}", description, model))
    if not plans:
        raise ConfigError("no method configured (set method=<name> or method=[a,b])")
    return plans


def plan_model(model_cfg: Mapping[str, Any]) -> ModelSpec:
    """The model spec, checked without loading anything (a typo in `model.arch` fails before any work)."""
    from harness.models.architectures import ARCHITECTURES

    try:
        spec = ModelSpec.from_config(model_cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    if spec.source == "random" and spec.arch not in ARCHITECTURES:
        raise ConfigError(f"model config {spec.name!r}: unknown random architecture arch={spec.arch!r}; "
                          f"valid: {', '.join(sorted(ARCHITECTURES))}")
    return spec


def plan_metrics(metric_ids: Iterable[str], dataset: Dataset) -> list[type[Metric]]:
    classes = []
    for metric_id in metric_ids:
        cls = METRICS.get(metric_id)
        if dataset.family not in cls.families:
            raise ConfigError(f"metric {metric_id!r} applies to {'/'.join(cls.families)} samples; dataset "
                              f"{dataset.name!r} holds {dataset.family} samples")
        classes.append(cls)
    return classes
