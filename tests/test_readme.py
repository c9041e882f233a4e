"""The README's commands, as a new user types them: every `python -m harness ...` override composes, the
cheap dataset commands run verbatim from the project root with `../shared`, and the test command prints its
closing count."""
from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys

import pytest

from harness.paths import PROJECT_ROOT


def test_pytest_prints_its_closing_count_even_with_q():
    """The project's pytest options must leave the summary line (`N passed`) visible, also when a user adds
    `-q` as the README once did (pytest's `-qq` drops it)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_stats.py::test_intervals_are_seeded_and_deterministic"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^1 passed in [\d.]+s", proc.stdout.strip().splitlines()[-1]), proc.stdout


README = PROJECT_ROOT / "README.md"
SHARED_OPTION_VALUES = {"categories": "[shapes]", "ids": "[square_right]", "ids_file": "ids.txt", "limit": "2",
                        "point_fraction": "0.25", "point_seed": "3"}


def readme_commands(prefix: str) -> list[str]:
    """Every command in README.md's code blocks (continuation lines joined, comments dropped) and inline code
    spans that starts with `prefix`."""
    text = README.read_text()
    commands, block, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            if fenced:
                joined = "\n".join(block).replace("\\\n", " ")
                commands += [c.strip() for c in joined.splitlines()]
            fenced, block = not fenced, []
        elif fenced:
            block.append(line)
    commands += re.findall(r"`(python -m [^`]+)`", text)
    prefix_words = prefix.split()
    words = [shlex.split(c, comments=True) for c in commands]
    return [shlex.join(w) for w in words if w[:len(prefix_words)] == prefix_words]


def compose_command(words: list[str]) -> dict:
    """What `python -m harness <words>` composes: a multirun (`-m`) contributes its first job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from harness.config import compose

    overrides = []
    for override in OverridesParser.create().parse_overrides([w for w in words if w != "-m"]):
        text = override.input_line
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            text = f"{override.get_key_element()}={first}"
        overrides.append(text)
    return compose(overrides)


def harness_runs() -> list[str]:
    return [c for c in readme_commands("python -m harness") if shlex.split(c)[2] == "harness"]


def test_the_readme_lists_the_commands_this_test_reads():
    runs = harness_runs()
    assert len(runs) >= 15 and "python -m harness" in runs
    assert any("dataset.root=../shared/data/dragbench-d" in c for c in runs)
    assert any("hydra/launcher=slurm" in c for c in runs)  # the scale-out block is read too


@pytest.mark.parametrize("command", harness_runs())
def test_every_readme_run_command_composes_and_plans(command):
    """Each `python -m harness ...` line of the README composes with Hydra (unknown keys, such as an
    undeclared `dataset.limit`, fail here) and its methods and metrics pass the run's planning checks."""
    from types import SimpleNamespace

    from harness import determinism
    from harness.pipeline import plan_methods, plan_metrics
    from harness.registry import DATASETS

    cfg = compose_command(shlex.split(command)[3:])
    if cfg.get("ablation"):
        return  # an ablation plans its points itself (tests/test_ablation.py); composing is what is checked here
    family = DATASETS.get(cfg["dataset"]["name"]).family
    dataset = SimpleNamespace(name=cfg["dataset"]["name"], family=family)
    plan_methods(cfg.get("method") or {}, cfg["model"], dataset, determinism.kernel_choices(cfg))
    plan_metrics(list(cfg.get("metrics") or []), dataset)


def test_readme_dataset_options_are_declared_by_every_dataset(tmp_path):
    """The shared options the README documents (`dataset.limit=N`, ...) are plain overrides (no `+`) for
    every dataset config, and a run's dataset accepts them."""
    from harness.config import compose, group_options
    from harness.data.base import open_dataset

    documented = set(re.findall(r"\bdataset\.(\w+)=", README.read_text()))
    assert set(SHARED_OPTION_VALUES) <= documented, documented
    (tmp_path / "ids.txt").write_text("square_right\n")
    for name in group_options("dataset"):
        overrides = [f"dataset={name}"] + [f"dataset.{k}={v}" for k, v in SHARED_OPTION_VALUES.items()]
        cfg = compose(overrides)["dataset"]
        assert {k: cfg[k] for k in ("limit", "point_seed")} == {"limit": 2, "point_seed": 3}, name
    cfg = compose(["dataset=demo", "dataset.limit=2", "dataset.point_fraction=0.5",
                   f"dataset.ids_file={tmp_path / 'ids.txt'}", "dataset.categories=[shapes]"])
    dataset = open_dataset(cfg["dataset"])
    assert dataset.sample_ids() == ["demo/shapes/square_right"] and dataset.key == "demo@pf0.5-ps0"
    assert open_dataset(compose(["dataset=demo", "dataset.limit=2"])["dataset"]).sample_ids() == [
        "demo/shapes/disc_brush", "demo/shapes/square_right"]


def test_the_dift_model_message_names_an_override_that_exists():
    from harness.config import compose
    from harness.metrics.features import MetricContext

    with pytest.raises(ValueError) as info:
        MetricContext({}, device="cpu").dift_models(__import__("torch").float32)
    override = re.search(r"(\S+@\S+=\w+)", str(info.value)).group(1)
    assert compose(["features=smoke", override])["features"]["dift_model"]["name"] == "sd21"


@pytest.mark.integration
def test_readme_commands_on_the_shared_data_run_verbatim_from_the_project_root():
    """The README's commands that read `../shared/data` (the relative roots a new user copies), run exactly as
    written from the project root: describe validates every sample, the run edits every sample."""
    from tests.conftest import shared_path

    shared_path("data", "dragbench-d")
    commands = [c for c in readme_commands("python -m") if "../shared/data/" in c]
    assert len(commands) >= 3, commands
    for command in commands:
        words = shlex.split(command)
        proc = subprocess.run([sys.executable, *words[1:]], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        if words[2] == "harness.data":
            expected = {"dragbench-d": 20, "drag100": 10, "vfd-bench": 6}[re.search(r"shared/data/([\w-]+)", command)[1]]
            assert json.loads(proc.stdout)["samples"] == expected and "invalid" not in proc.stderr, command
        elif words[2] == "harness.metrics":
            assert math.isfinite(json.loads(proc.stdout)["value"]), command
        else:
            edits = re.findall(r"\[edit\] (\S+): reused (\d+) of (\d+) samples, edited (\d+), failed (\d+)", proc.stdout)
            assert edits and all(int(failed) == 0 for *_, failed in edits), proc.stdout
