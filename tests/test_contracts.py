"""Contract tests over every registered method, dataset and metric (in the spirit of diffusers'
`PipelineTesterMixin`): parametrised from the registries, so a new entry is checked without a new test.

Each method: its YAML states exactly its dataclass defaults (one source of truth; Hydra overrides still
work); it builds from its composed config, records its settings, refuses an unknown field clearly, survives
a pickle of its config, and runs deterministically on the tiny model at 64 px with small step overrides.
Each dataset: a config file, a name that matches, clear refusals of a missing root and an unknown option.
Each metric: a protocol id, a declared direction, scale and reduction, and JSON-serialisable settings.
"""
from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import yaml

from harness.config import compose
from harness.data.base import DataError, DatasetLoader, open_dataset
from harness.method import EditMethod
from harness.metrics.base import Metric, SetMetric
from harness.paths import CONF_DIR
from harness.registry import DATASETS, METHODS, METRICS, Registry
from harness.types import DragSample
from tests.pie_fixtures import pie_sample

pytestmark = pytest.mark.usefixtures("one_thread_module")


def builtin(registry: Registry, *packages: str) -> list[str]:
    """The registry's entries shipped with the harness (tests register their own helpers too)."""
    return [n for n in registry.names() if registry.get(n).__module__.split(".")[0] in packages]


METHOD_NAMES = builtin(METHODS, "methods")
DATASET_NAMES = builtin(DATASETS, "harness")
METRIC_IDS = builtin(METRICS, "harness")

# Fields a method's YAML leaves out on purpose: the shared DDIM-drag `preset` field of methods without presets.
NOT_IN_YAML = {("freedrag", "preset"), ("gooddrag", "preset"), ("draglora", "preset")}
_DDIM = dict(lora_steps=1, lora_resolution=64, lora_batch_size=1, steps=4)
SMALL = {  # small step overrides so that every method runs in seconds on the tiny model
    "dragdiffusion": dict(_DDIM, n_pix_step=2), "dragnoise": dict(_DDIM, n_pix_step=2),
    "freedrag": dict(_DDIM, max_step=2), "sdedrag": dict(lora_steps=1, steps=20, t0=0.3),
    "gooddrag": dict(_DDIM, drag_end_step=2, track_per_step=2, max_drag_per_track=2),
    "regiondrag": dict(steps=4), "p2p": dict(steps=2), "pnp": dict(steps=2), "masactrl": dict(steps=2),
    "pix2pix_zero": dict(steps=2, captioner="random_tiny", regularisation_steps=1),
    "paint_by_example": dict(steps=2, resolution=64), "sd_inpaint": dict(steps=2, resolution=64),
    "rf_solver_edit": dict(steps=2, inject=2), "fireflow": dict(steps=2), "flowedit": dict(steps=2, n_max=2),
    "kv_edit": dict(steps=2, skip_step=0), "flux_kontext": dict(steps=2, auto_resize=False),
    "inpaint4drag": dict(preset="app", steps=2), "fastdrag": dict(steps=4, inversion_strength=0.5),
    "instruct_pix2pix": dict(steps=2, resolution=64), "magicbrush": dict(steps=2, resolution=64),
    "qwen_image_edit": dict(steps=2, area=64 * 64), "lightningdrag": dict(steps=2, size=64, candidates=1),
    "draglora": dict(_DDIM, n_pix_step=2), "diffeditor": dict(resolution=64, steps=8), "dragondiffusion": dict(resolution=64, steps=8),
}
OWN_MODEL = {"paint_by_example": "tiny_pbe", "sd_inpaint": "tiny_inpaint", "flux_kontext": "tiny_flux_kontext",
             "inpaint4drag": "tiny_inpaint", "lightningdrag": "tiny_inpaint",
             **dict.fromkeys(("rf_solver_edit", "fireflow", "flowedit", "kv_edit"), "tiny_flux"),
             "instruct_pix2pix": "tiny_instruct_pix2pix", "magicbrush": "tiny_instruct_pix2pix",
             "qwen_image_edit": "tiny_qwen_image_edit"}


def yaml_config(name: str) -> dict:
    data = yaml.safe_load((CONF_DIR / "method" / f"{name}.yaml").read_text()) or {}
    data.pop("defaults", None)
    data.pop("model", None)
    return data


def defaults(cls: type[EditMethod]) -> dict:
    out = {}
    for f in dataclasses.fields(cls.Config):
        out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return out


def drag_sample() -> DragSample:
    rng = np.random.default_rng(1)
    image = (rng.random((64, 64, 3)) * 60 + 90).astype(np.uint8)
    image[20:36, 18:34] = (220, 40, 30)
    return DragSample("t/c/square", image, "a red square", [(26, 28)], [(40, 28)], np.ones((64, 64), bool))


def sample_for(cls: type[EditMethod]):
    family = cls.families[0]
    if family == "drag":
        return drag_sample()
    if family == "prompt":
        return pie_sample(size=64)
    from tests.test_exemplar import make_sample

    return make_sample("000000001773")


# ---------------------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_yaml_states_exactly_the_dataclass_defaults(name):
    cls, stated = METHODS.get(name), yaml_config(name)
    expected = {k: v for k, v in defaults(cls).items() if (name, k) not in NOT_IN_YAML}
    assert sorted(stated) == sorted(expected), f"conf/method/{name}.yaml keys differ from {cls.__name__}.Config"
    drift = {k: (stated[k], expected[k]) for k in stated if stated[k] != expected[k]}
    assert not drift, f"conf/method/{name}.yaml restates defaults that drifted from the dataclass: {drift}"


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_builds_from_its_config_records_it_and_pickles(name):
    cls = METHODS.get(name)
    assert issubclass(cls, EditMethod) and cls.name == name
    params = dict(compose([f"method={name}"])["method"][name] or {})
    params.pop("model", None)
    method = cls.build(params)
    description = method.describe()
    assert description["method"] == name
    config = json.loads(json.dumps(dataclasses.asdict(method.config)))
    recorded = json.loads(json.dumps(description["config"]))
    assert recorded == {k: config[k] for k in recorded}  # the settings recorded are the ones it runs with
    assert not set(cls.runtime_fields) & set(recorded)  # speed-only fields stay out of the store key
    assert bool(recorded) == bool(set(config) - set(cls.runtime_fields))
    json.dumps(description)
    assert pickle.loads(pickle.dumps(method.config)) == method.config


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_refuses_an_unknown_field_naming_it(name):
    with pytest.raises(ValueError, match=rf"method '{name}': unknown config field\(s\) \['no_such_field'\]"):
        METHODS.get(name).build({"no_such_field": 1})


def test_hydra_overrides_still_reach_the_dataclass():
    cfg = compose(["method=regiondrag", "method.regiondrag.noise_scale=0.6"])
    assert METHODS.get("regiondrag").build(cfg["method"]["regiondrag"]).config.noise_scale == 0.6


@pytest.fixture(scope="module")
def models_by_name(tiny_models):
    from harness.models import load_models

    loaded = {"tiny": tiny_models}

    def get(name: str):
        if name not in loaded:
            loaded[name] = load_models({**compose([f"model={name}"])["model"], "device": "cpu"})
        return loaded[name]
    return get


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_runs_on_the_tiny_model_deterministically(name, models_by_name, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path / "cache"))
    cls = METHODS.get(name)
    method = cls.build(SMALL.get(name, {}))
    method.setup(models_by_name(OWN_MODEL.get(name, "tiny")) if cls.needs_model else None)
    sample = sample_for(cls)
    first, second = method.edit(sample, 42), method.edit(sample, 42)
    assert first.image.dtype == np.uint8 and first.image.shape == sample.image.shape
    assert np.array_equal(first.image, second.image), f"{name} is not deterministic for a fixed seed"
    json.dumps(first.info or {})


# --------------------------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_dataset_has_its_config_and_refuses_bad_input_clearly(name, tmp_path):
    cls = DATASETS.get(name)
    assert issubclass(cls, DatasetLoader) and cls.name == name
    cfg = yaml.safe_load((CONF_DIR / "dataset" / f"{name}.yaml").read_text())
    assert cfg["name"] == name
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(DataError, match=name):
        open_dataset({**cfg, "no_such_option": 1})
    if cfg.get("root") == "???":
        with pytest.raises(DataError, match=name):  # at opening, or at the latest when listing samples
            open_dataset({**cfg, "root": str(tmp_path / "missing")}).sample_ids()


# ---------------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("metric_id", METRIC_IDS)
def test_metric_declares_its_protocol_direction_scale_and_reduction(metric_id):
    cls = METRICS.get(metric_id)
    assert issubclass(cls, Metric) and cls.id == metric_id and cls.families
    assert isinstance(cls.version, int) and isinstance(cls.higher_is_better, bool) and cls.table_scale > 0
    values, weights = np.array([[1.0, 2.0, 4.0]]), np.array([[1.0, 1.0, 2.0]])
    reduced = cls.reduce(values, weights, axis=-1)
    assert reduced.shape == (1,) and np.isfinite(reduced).all()  # vectorised over bootstrap resamples
    if issubclass(cls, SetMetric):
        parts = [{"a": np.ones(2)}, {"b": np.zeros(2)}]
        assert sorted(cls.merge_states(parts)) == ["a", "b"]


def test_registry_refuses_a_class_of_the_wrong_kind_and_sets_the_name():
    registry: Registry = Registry("method", (), "harness.method:EditMethod")
    with pytest.raises(TypeError, match="not a subclass of harness.method.EditMethod"):
        registry.register("x")(object)

    class Named(EditMethod):
        pass

    assert registry.register("named")(Named).name == "named"

    class Other(EditMethod):
        name = "other"

    with pytest.raises(ValueError, match="declares name='other'"):
        registry.register("different")(Other)
