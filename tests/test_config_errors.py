"""Configuration mistakes fail before any work, with the closest valid names."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.cli import main, run
from harness.config import compose
from harness.pipeline import ConfigError
from harness.registry import UnknownNameError

importlib.import_module("tests.reliability_plugins")  # registers the test_prompt dataset


def cli_error(monkeypatch, capsys, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("override, expected", [
    ("model=sd22", "unknown model 'sd22' (no conf/model/sd22.yaml). Did you mean 'sd21'"),
    ("dataset=dem", "unknown dataset 'dem' (no conf/dataset/dem.yaml). Did you mean 'demo'?"),
    ("method=[identity,regiondrg]", "unknown method 'regiondrg' (no conf/method/regiondrg.yaml). Did you mean 'regiondrag'"),
    ("features=smoky", "Did you mean 'smoke'?"),
])
def test_unknown_config_group_options_suggest_the_closest(override, expected, monkeypatch, capsys, tmp_path) -> None:
    err = cli_error(monkeypatch, capsys, f"out_dir={tmp_path}", override)
    assert expected in err and "Valid" in err
    with pytest.raises(UnknownNameError, match="Did you mean"):
        compose([override])
    assert not any(tmp_path.iterdir())


def config(tmp_path: Path, *overrides: str):
    cfg = compose(["method=[identity]", "metrics=[time]", *overrides])
    cfg["out_dir"] = str(tmp_path / "run")
    return OmegaConf.create(cfg)


@pytest.mark.parametrize("overrides, error, message", [
    (("dataset.name=dem",), UnknownNameError, "unknown dataset 'dem'. Did you mean 'demo'?"),
    (("metrics=[md_dift@regiondrg]",), UnknownNameError, "Did you mean 'md_dift@regiondrag'"),
    (("model.arch=tinny",), ConfigError, "unknown random architecture arch='tinny'"),
    (("model.dtype=float8",), ConfigError, "field 'dtype' must be one of"),
    (("method=[regiondrag]", "method.regiondrag.copy_paste_gate=sometimes"), ConfigError,
     "method 'regiondrag': invalid config: regiondrag: copy_paste_gate must be one of"),
    (("method=[regiondrag]", "method.regiondrag.steps=1"), ConfigError,
     "method 'regiondrag': invalid config: regiondrag: method.regiondrag.steps=1 with start_t=0.5"),
    (("method=[identity]", "+method.identity.radius=3"), ConfigError, "unknown config field(s) ['radius']"),
    # incompatible pairings: a drag metric or a drag method on a prompt-editing dataset
    (("dataset.name=test_prompt", "metrics=[md_dift@regiondrag]"), ConfigError,
     "metric 'md_dift@regiondrag' applies to drag samples; dataset 'test_prompt' holds prompt samples"),
    (("dataset.name=test_prompt", "method=[identity,regiondrag]"), ConfigError,
     "method 'regiondrag' edits drag samples; dataset 'test_prompt' holds prompt samples"),
])
def test_bad_configs_are_refused_before_any_work(overrides, error, message, tmp_path) -> None:
    with pytest.raises(error) as info:
        run(config(tmp_path, *overrides))
    assert message in str(info.value)
    assert not (tmp_path / "run" / "store").exists() and not (tmp_path / "run" / "run.json").exists()


def test_incompatible_pairing_from_the_command_line(monkeypatch, capsys, tmp_path) -> None:
    err = cli_error(monkeypatch, capsys, f"out_dir={tmp_path}", "plugins=[tests.reliability_plugins]",
                    "dataset.name=test_prompt", "method=[identity]", "metrics=[lpips_alex@regiondrag,md_dift@regiondrag]")
    assert err.startswith("error: metric 'lpips_alex@regiondrag' applies to drag samples")
    assert not (tmp_path / "store").exists()
