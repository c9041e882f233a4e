"""Every inversion × editor pair of DirectInversion's table (the rows of reports/directinversion_pie.yaml, with
their method configs) runs on a tiny PIE-Bench fixture, and a whole PIE-Bench run (edit → score → report)
goes through the harness with a test-only dataset."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.data.base import DatasetLoader
from harness.diffusion.attention import transformer_blocks
from harness.diffusion.attention_control import ControlledAttnProcessor
from harness.paths import PROJECT_ROOT
from harness.registry import DATASETS, METHODS
from harness.report.spec import load_spec
from tests.pie_fixtures import pie_sample

# every row of the published table (reports/directinversion_pie.yaml), with the row's method config
PUBLISHED_ROWS = [(row.label, row.method, row.params) for row in load_spec(PROJECT_ROOT / "reports" / "directinversion_pie.yaml").rows]
# settings that keep the tiny runs short; they never change what the row's fields select
FAST = {"null_text": {"null_text_inner_steps": 1}, "style_diffusion": {"style_inner_steps": 2}}


def build(name: str, inversion: str, models, **extra):
    params = {"inversion": inversion, "steps": 2, **FAST.get(inversion, {}), **extra}
    method = METHODS.get(name).build(params)
    method.setup(models)
    return method


def test_every_published_row_is_runnable():
    assert len(PUBLISHED_ROWS) == 11 and all(method is not None for _, method, _ in PUBLISHED_ROWS)


@pytest.mark.parametrize("label, name, params", PUBLISHED_ROWS, ids=[label for label, _, _ in PUBLISHED_ROWS])
def test_published_pair_runs(tiny_models, label, name, params):
    sample = pie_sample()
    inversion = params["inversion"]
    result = build(name, inversion, tiny_models, **{k: v for k, v in params.items() if k != "inversion"}).edit(sample, seed=1234)
    assert result.image.shape == sample.image.shape and result.image.dtype == np.uint8
    assert result.info["inversion"] == inversion and result.info["seed"] == 1234
    assert len(result.info["denoising_timesteps"]) == 2
    assert {"inversion", "editing"} <= set(result.timings)
    json.dumps(result.info, allow_nan=False)  # records must be JSON-serialisable
    if inversion == "direct" and name != "pnp":
        assert len(result.info["direct_offset_mean_abs"]) == 2
    # attention processors and feature hooks are restored after every edit
    unet = tiny_models.unet
    assert not isinstance(transformer_blocks(unet)[0].attn1.processor, ControlledAttnProcessor)
    assert not unet.up_blocks[1].resnets[1].conv2._forward_hooks



@pytest.mark.parametrize("name, inversion", [("p2p", "style_diffusion"), ("pix2pix_zero", "ddim"), ("pix2pix_zero", "direct")])
def test_optimising_editors_are_deterministic(tiny_models, one_thread, name, inversion):
    method = build(name, inversion, tiny_models)
    a, b = method.edit(pie_sample(), 1234), method.edit(pie_sample(), 1234)
    assert np.array_equal(a.image, b.image)
    assert {k: v for k, v in a.info.items() if not k.endswith("_s")} == {k: v for k, v in b.info.items() if not k.endswith("_s")}


def test_edits_are_deterministic_and_use_the_target_prompt(tiny_models):
    method = build("p2p", "direct", tiny_models)
    sample = pie_sample()
    a, b = method.edit(sample, 1234).image, method.edit(sample, 1234).image
    assert np.array_equal(a, b)
    other = pie_sample()
    other = type(other)(**{**other.__dict__, "target_prompt": "a red [car] on a table", "blended_words": ("ball", "car")})
    assert not np.array_equal(method.edit(other, 1234).image, a)


def test_p2p_without_blend_words_and_replace_controller(tiny_models):
    sample = pie_sample()
    bare = type(sample)(**{**sample.__dict__, "blended_words": ()})
    result = build("p2p", "ddim", tiny_models).edit(bare, 1234)
    assert result.info["local_blend"] is False
    build("p2p", "ddim", tiny_models, controller="replace").edit(sample, 1234)  # same word count


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="'inversion' must be one of ddim, direct"):
        METHODS.get("pnp").build({"inversion": "null_text"})
    with pytest.raises(ValueError, match="'inversion' must be one of ddim, direct"):
        METHODS.get("pix2pix_zero").build({"inversion": "style_diffusion"})
    with pytest.raises(ValueError, match="'inversion' must be one of ddim, null_text, negative_prompt, direct, got"):
        METHODS.get("masactrl").build({"inversion": "style_diffusion"})  # needs the style_* fields only p2p has
    with pytest.raises(ValueError, match="controller"):
        METHODS.get("p2p").build({"controller": "reweight"})
    with pytest.raises(ValueError, match="source_prompt"):
        METHODS.get("masactrl").build({"source_prompt": "target"})
    with pytest.raises(ValueError, match="'prompt' must be caption or source"):
        METHODS.get("pix2pix_zero").build({"prompt": "instruction"})


def test_p2p_by_length_controller_and_store_key(tiny_models):
    sample = pie_sample()  # "a red [ball] on a table" → "a red [apple] on a table": lengths differ
    method = build("p2p", "ddim", tiny_models, controller="by_length", local_blend=False)
    assert method.edit(sample, 1234).info["controller"] == "refine"
    same = type(sample)(**{**sample.__dict__, "target_prompt": "a red [bell] on a table", "blended_words": ("ball", "bell")})
    assert method.edit(same, 1234).info["controller"] == "replace"
    # StyleDiffusion's fields are part of the store key only when it runs
    assert not any(k.startswith("style_") for k in method.describe()["config"])
    assert "style_inner_steps" in build("p2p", "style_diffusion", tiny_models).describe()["config"]


def test_image_sides_must_be_multiples_of_8(tiny_models):
    sample = pie_sample()
    odd = type(sample)(**{**sample.__dict__, "image": sample.image[:60], "mask": sample.mask[:60]})
    with pytest.raises(ValueError, match="divisible by 8"):
        build("masactrl", "ddim", tiny_models).edit(odd, 1234)


@DATASETS.register("pie_test")
class PieTestLoader(DatasetLoader):
    """Test-only stand-in for the PIE-Bench loader: one ordinary sample and one whose mask is full."""

    name = "pie_test"
    family = "prompt"

    def list_ids(self):
        return ["pie_test/1_change_object/000000000001", "pie_test/1_change_object/000000000002"]

    def load_sample(self, sample_id):
        return pie_sample(sample_id.rsplit("/", 1)[1], mask="box" if sample_id.endswith("1") else "full")


def test_pie_bench_run_end_to_end(tmp_path):
    metrics = ["pie_structure_distance", "pie_psnr_unedit_part", "pie_mse_unedit_part",
               "pie_clip_similarity_target_image_edit_part", "time"]
    cfg = compose(["experiment=pie_bench", "model=tiny", "features=smoke",
                   "method=[p2p]", "method.p2p.inversion=direct", "method.p2p.steps=2", f"metrics=[{','.join(metrics)}]"])
    assert cfg["dataset"]["name"] == "pie_bench"
    cfg["dataset"] = {"name": "pie_test"}  # the experiment's loader needs a real PIE-Bench root
    cfg["out_dir"] = str(tmp_path / "run")
    summary = run(OmegaConf.create(cfg))
    assert next(iter(summary["edit"].values()))["edited"] == 2
    record = json.loads(next((tmp_path / "run" / "store" / "pie_test").glob("p2p-*/1_change_object/000000000001.json")).read_text())
    assert record["seed"] == 1234 and record["method_config"]["inversion"] == "direct"
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    full = scores[scores["sample_id"].str.endswith("2")].set_index("metric")
    assert full.loc["pie_psnr_unedit_part", "status"] == "undefined" and np.isnan(full.loc["pie_psnr_unedit_part", "value"])
    assert full.loc["pie_structure_distance", "status"] == "ok"
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv").iloc[0]
    assert board["n"] == 2 and board["failed"] == 0 and board["nan"] == 1
    box = scores[scores["sample_id"].str.endswith("1")].set_index("metric")
    assert board["pie_psnr_unedit_part"] == pytest.approx(box.loc["pie_psnr_unedit_part", "value"])  # nan excluded
    assert "SMOKE RUN" in (tmp_path / "run" / "leaderboard.md").read_text()


def test_plain_unet_calls_replay_as_graphs_only_where_that_cannot_change_a_result(tiny_models):
    """`PromptEditor.eps` replays CUDA graphs (GraphedUNet) only for forward-only calls on a GPU with no
    attention controller installed: a replay would skip a controller's per-call Python logic (PnP's
    injections run through `eps`), and gradient steps (null-text) cannot be replayed."""
    from types import SimpleNamespace

    import torch

    from harness.diffusion.attention_control import AttentionController, controlled_attention, is_controlled
    from harness.diffusion.graphs import GraphedUNet

    unet = tiny_models.unet
    gpu_tensor = SimpleNamespace(device=torch.device("cuda"))  # only its device is read
    graphed = GraphedUNet(unet)
    with torch.no_grad():
        assert graphed.replays(gpu_tensor)
        assert not GraphedUNet(unet, enabled=False).replays(gpu_tensor)
        assert not graphed.replays(torch.zeros(1))  # CPU
        with controlled_attention(unet, AttentionController()):
            with controlled_attention(unet, AttentionController()):
                assert is_controlled(unet) and not graphed.replays(gpu_tensor)
            assert is_controlled(unet)  # the outer block is still active
        assert not is_controlled(unet) and graphed.replays(gpu_tensor)
    assert not graphed.replays(gpu_tensor)  # gradients on

    method = METHODS.get("pnp").build({"steps": 3})  # cuda_graphs is a runtime field: no new store key
    assert method.config.cuda_graphs and "cuda_graphs" not in method.describe()["config"]
    method.setup(tiny_models)
    x, context = torch.randn(1, 4, 8, 8), tiny_models.encode_prompt("a cat")
    with torch.no_grad():  # on the CPU the editor's eps is the plain UNet call
        torch.testing.assert_close(method.eps(x, 10, context), unet(x, 10, encoder_hidden_states=context).sample,
                                   rtol=0, atol=0)
