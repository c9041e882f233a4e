"""Add-on components (harness/models/components.py): configs checked strictly, the build follows the base
model, each build happens once, and the identity keeps store keys apart."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.models import components as comp
from harness.models.components import ComponentSpec, component_builder, component_identity, load_component, variant_for
from harness.models.spec import ModelSpec

CALLS: list[tuple[str, str]] = []


@component_builder("test_dummy")
def _build_dummy(spec: ComponentSpec, variant: str, models) -> dict:
    CALLS.append((spec.name, variant))
    return {"variant": variant, "arch": None if variant == "real" else spec.arch(variant)}


def _spec(**kw) -> ComponentSpec:
    return ComponentSpec.from_config(dict(dict(name="dummy", kind="test_dummy", path="org/repo", subfolder="models",
                                               weight_name="w.bin", random_arch="full", tiny_arch="small"), **kw), "test")


def _models(**kw):
    spec = ModelSpec.from_config(dict(name="m", **kw))
    return SimpleNamespace(spec=spec, device=torch.device("cpu"), dtype=torch.float32)


def test_unknown_field_names_file_and_field(tmp_path):
    (tmp_path / "component").mkdir()
    (tmp_path / "component" / "bad.yaml").write_text("kind: ip_adapter\nweigth_name: x.bin\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*unknown field\(s\) \['weigth_name'\]"):
        ComponentSpec.read("bad", tmp_path)
    with pytest.raises(ValueError, match="unknown component 'nope'"):
        ComponentSpec.read("nope", tmp_path)
    (tmp_path / "component" / "nokind.yaml").write_text("path: a/b\n")
    with pytest.raises(ValueError, match=r"nokind\.yaml: field 'kind' is required"):
        ComponentSpec.read("nokind", tmp_path)


def test_shipped_component_configs_parse():
    names = comp.component_names()
    assert {"ip_adapter_plus_sd15", "ip_adapter_sd15"} <= set(names)
    for name in names:
        spec = ComponentSpec.read(name)
        assert spec.random_arch and spec.tiny_arch, name


def test_variant_follows_base_model():
    assert variant_for(_models(source="random", arch="tiny")) == "tiny"
    assert variant_for(_models(source="random", arch="tiny_sd21")) == "tiny"
    assert variant_for(_models(source="random", arch="sd15")) == "random"
    assert variant_for(_models(source="pretrained", path="org/sd")) == "real"


def test_identity_names_the_build():
    spec = _spec(revision="abc")
    assert component_identity(spec, _models(source="pretrained", path="org/sd")) == "pretrained:org/repo/models/w.bin@abc"
    assert component_identity(spec, _models(source="random", arch="sd15")) == "random:full:seed0"
    assert component_identity(_spec(seed=3), _models(source="random", arch="tiny")) == "random:small:seed3"
    with pytest.raises(ValueError, match="no tiny_arch"):
        component_identity(_spec(tiny_arch=None), _models(source="random", arch="tiny"))


def test_built_once_per_base_device_dtype():
    comp.clear_cache()
    CALLS.clear()
    spec = _spec()
    tiny, full = _models(source="random", arch="tiny"), _models(source="random", arch="sd15")
    a = load_component(spec, tiny)
    assert load_component(spec, tiny) is a
    b = load_component(spec, full)
    assert a["arch"] == "small" and b["arch"] == "full"
    assert CALLS == [("dummy", "tiny"), ("dummy", "random")]
    comp.clear_cache()


def test_unregistered_kind_is_an_error():
    with pytest.raises(ValueError, match="no builder registered for component kind 'nothing'"):
        load_component(_spec(kind="nothing"), _models(source="random", arch="tiny"))


def test_components_in_catalogue_and_fetch_patterns():
    from harness.models.catalogue import entries

    rows = {e.name: e for e in entries()}
    source = rows["ip_adapter_plus_sd15"].source
    assert source.location == "h94/IP-Adapter" and source.setting == "component.ip_adapter_plus_sd15"
    assert "models/ip-adapter-plus_sd15.bin" in source.allow_patterns()
    assert "models/image_encoder/model.safetensors" in source.allow_patterns()
