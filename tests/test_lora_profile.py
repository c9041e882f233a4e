"""The fast LoRA profile: the optimisation drag methods fit a small LoRA on the tiny random models (the
demo) and the published one elsewhere; the profile is resolved when the run is planned, said in the run
output and part of the store key, so outputs of one profile are never reused for the other."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.config import compose
from harness.diffusion.lora import FAST_LORA
from harness.pipeline import ConfigError, plan_methods

LORA_METHODS = ["dragdiffusion", "dragnoise", "freedrag", "gooddrag", "sdedrag"]
DEMO = SimpleNamespace(name="demo", family="drag")


def plan(*overrides: str):
    cfg = compose(list(overrides))
    return plan_methods(cfg["method"], cfg["model"], DEMO)


@pytest.mark.parametrize("name", LORA_METHODS)
def test_the_tiny_model_gets_the_fast_profile_and_says_so(name, capsys):
    (fast,) = plan(f"method=[{name}]")  # the demo's defaults: model=tiny
    assert "fast LoRA profile" in capsys.readouterr().out
    config = fast.description["config"]
    assert config["lora_profile"] == "fast" and {k: config[k] for k in FAST_LORA} == FAST_LORA
    (published,) = plan(f"method=[{name}]", f"method.{name}.lora_profile=published")
    assert capsys.readouterr().out == ""
    assert published.key != fast.key and published.description["config"]["lora_profile"] == "published"
    assert published.description["config"]["lora_steps"] != FAST_LORA["lora_steps"]


@pytest.mark.parametrize("name", LORA_METHODS)
def test_full_size_models_keep_the_configured_lora_and_their_store_keys(name, capsys):
    (auto,) = plan(f"method=[{name}]", "model=random_sd15")
    assert capsys.readouterr().out == ""
    config = auto.description["config"]
    assert "lora_profile" not in config  # auto at its default: keys of runs made before profiles stay valid
    assert config["lora_resolution"] == 512 and config["lora_steps"] not in (None, FAST_LORA["lora_steps"])
    (fast,) = plan(f"method=[{name}]", "model=random_sd15", f"method.{name}.lora_profile=fast")
    assert fast.key != auto.key and fast.description["config"]["lora_profile"] == "fast"


def test_an_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="lora_profile must be one of"):
        plan("method=[dragdiffusion]", "method.dragdiffusion.lora_profile=quick")
