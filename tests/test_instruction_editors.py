"""Instruction editors (InstructPix2Pix, MagicBrush, Qwen-Image-Edit) on tiny random models: exact parity with
diffusers' own pipelines called directly with the same weights and seed, the released canvas rule, clear
errors, and end-to-end runs on PIE-Bench and `instruction_folder` fixtures."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageOps

from harness.cli import run
from harness.config import compose
from harness.models import load_models
from harness.registry import METHODS
from methods.instruct_pix2pix import released_size
from methods.qwen_image_edit import canvas_area
from tests.dataset_fixtures import write_instruction_folder, write_pie_bench
from tests.pie_fixtures import pie_sample

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _model(name: str):
    return load_models({**compose([f"model={name}"])["model"], "device": "cpu"})


@pytest.fixture(scope="module")
def ip2p():
    return _model("tiny_instruct_pix2pix")


@pytest.fixture(scope="module")
def qwen():
    return _model("tiny_qwen_image_edit")


def test_released_canvas_follows_edit_cli():
    assert released_size(512, 512, 512) == (512, 512)  # PIE-Bench stays 512²
    assert released_size(640, 480, 512) == (512, 384)
    assert released_size(500, 333, 512) == (576, 384)  # shorter side rounded up to 64 first, as released


@pytest.mark.parametrize("name", ["instruct_pix2pix", "magicbrush"])
def test_instruct_pix2pix_is_diffusers_pipeline_exactly(ip2p, name):
    sample = pie_sample(size=64)
    method = METHODS.get(name).build({"steps": 2, "resolution": 64, "guidance_scale": 5.0, "image_guidance_scale": 1.2})
    method.setup(ip2p)
    result = method.edit(sample, 11)
    canvas = ImageOps.fit(Image.fromarray(sample.image), (64, 64), method=Image.Resampling.LANCZOS)
    direct = ip2p.pipe(prompt=sample.instruction, image=canvas, num_inference_steps=2, guidance_scale=5.0,
                       image_guidance_scale=1.2, generator=torch.Generator().manual_seed(11), output_type="np").images[0]
    assert np.array_equal(result.image, (np.clip(direct, 0, 1) * 255).astype(np.uint8))  # truncation, as released
    assert result.info["seed"] == 11 and result.info["scheduler"] == "EulerAncestralDiscreteScheduler"
    assert not np.array_equal(result.image, method.edit(sample, 12).image)  # the seed reaches the noise


def test_qwen_image_edit_is_diffusers_pipeline_exactly(qwen):
    sample = pie_sample(size=64)
    method = METHODS.get("qwen_image_edit").build({"steps": 2, "area": 64 * 64})
    method.setup(qwen)
    result = method.edit(sample, 5)
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as module

    original = module.calculate_dimensions
    with canvas_area(64 * 64):
        assert module.calculate_dimensions(1024 * 1024, 1.0) == original(64 * 64, 1.0)
        direct = qwen.pipe(image=Image.fromarray(sample.image), prompt=sample.instruction, negative_prompt=" ",
                           true_cfg_scale=4.0, num_inference_steps=2, generator=torch.Generator().manual_seed(5)).images[0]
    assert module.calculate_dimensions is original
    assert np.array_equal(result.image, np.asarray(direct))
    assert result.info["canvas"] == [64, 64] and result.info["seed"] == 5


def test_editors_refuse_a_missing_instruction_and_a_wrong_model(ip2p, tiny_models):
    method = METHODS.get("instruct_pix2pix").build({"steps": 1, "resolution": 64})
    with pytest.raises(TypeError, match="instruct_pix2pix needs an InstructPix2Pix-architecture model"):
        method.setup(tiny_models)
    method.setup(ip2p)
    with pytest.raises(ValueError, match="pie_test/1_change_object/000000000001: field 'instruction' is empty"):
        method.edit(dataclasses.replace(pie_sample(size=64), instruction=""), 0)
    with pytest.raises(TypeError, match="qwen_image_edit needs a Qwen-Image-Edit model"):
        METHODS.get("qwen_image_edit").build({}).setup(ip2p)
    with pytest.raises(ValueError, match="field 'steps' must be at least 2"):
        METHODS.get("qwen_image_edit").build({"steps": 1})
    with pytest.raises(ValueError, match="field 'resize'"):
        METHODS.get("magicbrush").build({"resize": "stretch"})


def _run(tmp_path, overrides):
    cfg = compose(overrides)
    cfg["out_dir"] = str(tmp_path / "run")
    run(OmegaConf.create(cfg))
    return pd.read_csv(tmp_path / "run" / "scores.csv")


def test_pie_bench_runs_instruction_editors_with_its_suite_unchanged(tmp_path):
    root = write_pie_bench(tmp_path / "pie")
    scores = _run(tmp_path, [
        "dataset=pie_bench", f"dataset.root={root}", "dataset.limit=1", "features=smoke", "metric_set=pie_bench",
        "method=[instruct_pix2pix,qwen_image_edit]",
        "model@method.instruct_pix2pix.model=tiny_instruct_pix2pix", "method.instruct_pix2pix.steps=1",
        "method.instruct_pix2pix.resolution=64",
        "model@method.qwen_image_edit.model=tiny_qwen_image_edit", "method.qwen_image_edit.steps=2",
        "method.qwen_image_edit.area=4096"])
    assert set(scores["method"]) == {"instruct_pix2pix", "qwen_image_edit"}
    assert (scores["status"].isin(["ok", "undefined"])).all(), scores[["metric", "status"]]
    assert "pie_structure_distance" in set(scores["metric"])


def test_instruction_folder_runs_with_the_instruction_metric_set(tmp_path):
    root = write_instruction_folder(tmp_path / "ins")
    scores = _run(tmp_path, [
        "dataset=instruction_folder", f"dataset.root={root}", "features=smoke", "metric_set=instruction",
        "method=[magicbrush]", "model@method.magicbrush.model=tiny_instruct_pix2pix", "method.magicbrush.steps=1",
        "method.magicbrush.resolution=64"])
    cat = scores[scores["sample_id"].str.endswith("cat")].set_index("metric")
    street = scores[scores["sample_id"].str.endswith("street")].set_index("metric")
    assert (cat["status"] == "ok").all()
    assert street.loc["l1@magicbrush", "status"] == "ok"  # no target: scored against the source
    assert street.loc["clip_t@magicbrush", "status"] == "undefined"  # no output caption
