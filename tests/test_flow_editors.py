"""The FLUX plumbing (harness/flow/) and editors on tiny random FLUX models: the schedule, the ODE walks, the
attention controllers, KV-Edit's background, and whole PIE-Bench runs through the harness."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.flow import latents as L
from harness.flow.attention import ControlledFluxProcessor, FlowController, ValueBank, controlled
from harness.flow.schedule import flux_timesteps, shift_mu
from harness.flow.solvers import Walk, integrate
from harness.registry import METHODS
from tests.pie_fixtures import pie_sample
from tests.test_prompt_editors import PieTestLoader  # noqa: F401  (registers the pie_test dataset)

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def flux():
    from harness.models import load_models

    return load_models({**compose(["model=tiny_flux"])["model"], "device": "cpu"})


def test_schedule_is_flux_shift_and_matches_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert shift_mu(256) == pytest.approx(0.5) and shift_mu(4096) == pytest.approx(1.15)
    times = flux_timesteps(28, 1024)  # 512² images: 32×32 tokens
    assert times[0] == 1.0 and times[-1] == 0.0 and all(a > b for a, b in zip(times, times[1:]))
    assert flux_timesteps(4, 1024, shift=False) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / 28, 28), mu=calculate_shift(1024))
    assert scheduler.sigmas.tolist() == pytest.approx(times, abs=1e-6)  # FlowEdit's schedule is the same


@pytest.mark.parametrize("solver, calls", [("euler", 4), ("rf_solver", 8), ("midpoint", 8), ("fireflow", 5)])
def test_walks_are_exact_for_constant_velocity_and_count_calls(solver, calls):
    seen = []

    def velocity(x, t, ctx):
        seen.append((ctx.interval, ctx.second_order, ctx.inject))
        return torch.full_like(x, 2.0)
    times = flux_timesteps(4, 16)
    x = integrate(velocity, torch.zeros(1, 3), Walk(times, solver, inverse=True, inject=1))
    assert torch.allclose(x, torch.full((1, 3), 2.0)) and len(seen) == calls
    assert seen[0][0] == 3 and seen[-1][0] == 0  # inversion runs the intervals from the image end
    assert [s[2] for s in seen if s[0] == 0] and all(s[2] == (s[0] < 1) for s in seen)


def test_second_order_walks_beat_euler_on_a_linear_field():
    times = flux_timesteps(8, 16, shift=False)
    exact = torch.exp(torch.tensor(-1.0))  # dx/dt = x from t = 1 to 0
    errors = {s: (integrate(lambda x, t, c: x, torch.ones(1), Walk(times, s)) - exact).abs().item()
              for s in ("euler", "rf_solver", "midpoint")}
    assert errors["rf_solver"] < errors["euler"] / 10 and errors["midpoint"] < errors["euler"] / 10


def test_controller_without_control_changes_nothing_and_processors_come_back(flux):
    pipe = flux.pipe
    packed = L.encode_image(pipe, pie_sample().image)
    text = L.encode_text(pipe, "a red ball")
    with torch.no_grad():
        plain = L.velocity(pipe.transformer, packed.latents, 0.5, text, packed.ids, 3.5)
        with controlled(pipe.transformer, FlowController()):
            assert isinstance(pipe.transformer.single_transformer_blocks[0].attn.processor, ControlledFluxProcessor)
            same = L.velocity(pipe.transformer, packed.latents, 0.5, text, packed.ids, 3.5)
    assert torch.equal(plain, same)
    assert not isinstance(pipe.transformer.transformer_blocks[0].attn.processor, ControlledFluxProcessor)


def test_value_bank_shares_values_only_on_injected_intervals(flux):
    def edit(inject):
        method = METHODS.get("rf_solver_edit").build(dict(steps=2, inject=inject))
        method.setup(flux)
        return method.edit(pie_sample(), 1234)
    none, shared = edit(0), edit(2)
    assert none.info["shared_values"] == 0 and shared.info["shared_values"] == 2 * 2 * 18  # intervals × calls × blocks
    assert not np.array_equal(none.image, shared.image)
    assert ValueBank(20, 37).bank == {}


def test_kv_edit_keeps_the_background_latents(flux, monkeypatch):
    method = METHODS.get("kv_edit").build(dict(steps=3, skip_step=1))
    method.setup(flux)
    captured = {}
    sample = pie_sample()

    def keep(packed, like):
        captured["z"] = packed
        return sample.image
    monkeypatch.setattr(method, "decode", keep)
    result = method.edit(sample, 1234)
    source = L.encode_image(flux.pipe, sample.image).latents
    inside = torch.zeros(source.shape[1], dtype=torch.bool)
    inside[[5, 6, 9, 10]] = True  # the 4 tokens of the fixture's 32×32 box on the 4×4 token grid
    assert result.info["masked_tokens"] == 4
    assert torch.equal(captured["z"][:, ~inside], source[:, ~inside])
    assert not torch.equal(captured["z"][:, inside], source[:, inside])
    with pytest.raises(ValueError, match="neither empty nor full"):
        method.edit(pie_sample(mask="full"), 1234)


def test_sd_models_are_refused_with_the_configs_to_use(tiny_models):
    with pytest.raises(ValueError, match="tiny_flux"):
        METHODS.get("fireflow").build({}).setup(tiny_models)


@pytest.mark.parametrize("model, methods, overrides", [
    ("tiny_flux", ["rf_solver_edit", "fireflow", "flowedit", "kv_edit"],
     ["method.rf_solver_edit.steps=2", "method.rf_solver_edit.inject=1", "method.fireflow.steps=2",
      "method.flowedit.steps=2", "method.flowedit.n_max=2", "method.kv_edit.steps=2", "method.kv_edit.skip_step=0"]),
    ("tiny_flux_kontext", ["flux_kontext"], ["method.flux_kontext.steps=2", "method.flux_kontext.auto_resize=false"]),
])
def test_pie_bench_run_end_to_end(tmp_path, model, methods, overrides):
    metrics = ["pie_structure_distance", "pie_psnr_unedit_part", "pie_clip_similarity_target_image", "time"]
    cfg = compose(["experiment=pie_bench_flux", f"model={model}", "features=smoke", f"method=[{','.join(methods)}]",
                   *overrides, f"metrics=[{','.join(metrics)}]"])
    cfg["dataset"] = {"name": "pie_test"}  # the experiment's loader needs a real PIE-Bench root
    cfg["out_dir"] = str(tmp_path / "run")
    summary = run(OmegaConf.create(cfg))
    # KV-Edit refuses the full-mask sample (no background to keep): recorded as a failure, the sweep goes on
    assert {s["method"]: (s["edited"], s["failed"]) for s in summary["edit"].values()} == {
        m: ((1, 1) if m == "kv_edit" else (2, 0)) for m in methods}
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv").set_index("method")
    for name in methods:
        record = json.loads(next((tmp_path / "run" / "store" / "pie_test").glob(f"{name}-*/1_change_object/000000000001.json")).read_text())
        assert record["seed"] == 1234 and record["status"] == "ok"
        assert board.loc[name, "failed"] == (1 if name == "kv_edit" else 0)
