"""Exemplar editing end to end: Paint-by-Example and the SD inpainting baseline on tiny random models,
the random/pretrained Paint-by-Example builds, and the set-level metric rows of the score stage on a
COCOEE fixture tree read by the `cocoee` loader."""
from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from harness.cli import run
from harness.config import compose
from harness.models import load_models
from harness.registry import METHODS
from harness.types import ExemplarSample
from tests.dataset_fixtures import write_cocoee

TINY_PBE = {"name": "tiny_pbe", "source": "random", "pipeline": "paint_by_example", "arch": "tiny", "seed": 0, "device": "cpu"}
TINY_INPAINT = {"name": "tiny_inpaint", "source": "random", "pipeline": "sd_inpaint", "arch": "tiny", "seed": 0, "device": "cpu"}
SIZES = {"000000001773": (64, 64), "000000003419": (64, 64), "900100376112": (72, 56)}  # one off-canvas source


def make_sample(name: str, dataset: str = "cocoee") -> ExemplarSample:
    w, h = SIZES[name]
    rng = np.random.default_rng(int(name) % 1000)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    image = np.stack([0.3 + 0.5 * xs, 0.4 + 0.3 * ys, 0.6 - 0.3 * xs * ys], -1) + rng.normal(0, 0.03, (h, w, 3))
    mask = np.zeros((h, w), bool)
    x0, y0 = int(rng.integers(4, 12)), int(rng.integers(4, 12))
    mask[y0 : y0 + 27, x0 : x0 + 30] = True  # box edges not on the 8-px latent grid
    reference = (rng.random((40, 28, 3)) * 255).astype(np.uint8)
    return ExemplarSample(f"{dataset}/coco/{name}", (np.clip(image, 0, 1) * 255).astype(np.uint8), mask, reference,
                          category="coco")


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def pbe_models():
    return load_models(TINY_PBE)


def build(name, models, **params):
    method = METHODS.get(name).build({"steps": 2, "resolution": 64, **params})
    method.setup(models)
    return method


def test_random_paint_by_example_has_the_published_architecture(pbe_models):
    pipe = pbe_models.pipe
    assert type(pipe).__name__ == "PaintByExamplePipeline" and pbe_models.spec.identity == "random:paint_by_example-tiny:seed0"
    assert pipe.unet.config.in_channels == 9 and pipe.unet.config.cross_attention_dim == 32
    assert len(pipe.image_encoder.mapper.blocks) == 1 and pipe.image_encoder.proj_out.out_features == 32
    from harness.models.architectures import ARCHITECTURES

    full = ARCHITECTURES["sd15"]["image_encoder"]  # CLIP ViT-L/14, mapper of (24 + 1) // 5 = 5 blocks
    assert (full["hidden_size"], full["num_hidden_layers"], full["patch_size"]) == (1024, 24, 14)


def test_paint_by_example_runs_deterministically_with_the_released_sampler(pbe_models):
    method = build("paint_by_example", pbe_models)
    sample = make_sample("000000001773")
    a, b = method.edit(sample, 42), method.edit(sample, 42)
    assert a.image.shape == sample.image.shape and a.image.dtype == np.uint8
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, method.edit(sample, 7).image)
    assert a.info["scheduler"] == "PNDMScheduler" and a.info["denoising_timesteps"] == [501, 1, 1]  # PLMS: 3 UNet calls
    assert a.info["mask_resize"] == "bilinear" and a.info["canvas"] == [64, 64] and not a.info["resized_to_canvas"]
    assert (a.image != sample.image).any()  # full decoded image: nothing pasted back


def test_published_defaults_and_plms_timesteps():
    from harness.diffusion.inpaint import make_scheduler
    from harness.models.architectures import PNDM_SCHEDULER

    cfg = METHODS.get("paint_by_example").Config()
    assert (cfg.steps, cfg.guidance_scale, cfg.scheduler, cfg.resolution) == (50, 5.0, "plms", 512)
    scheduler = make_scheduler("plms", PNDM_SCHEDULER)
    scheduler.set_timesteps(50)
    # LDM PLMS: range(0, 1000, 20) + 1, the pseudo improved-Euler first step evaluates 961 twice
    assert scheduler.timesteps.tolist() == [981, 961, 961] + list(range(941, 0, -20))
    ddim = make_scheduler("ddim", PNDM_SCHEDULER)
    ddim.set_timesteps(50)
    assert ddim.timesteps.tolist() == list(range(981, 0, -20)) and ddim.config.clip_sample is False


def test_mask_reaches_the_latent_grid_bilinear_as_released(pbe_models):
    base = make_sample("000000003419")
    mask = np.zeros((64, 64), bool)
    mask[4:30, 10:43] = True  # top edge between rows 3 and 4: bilinear gives 0.5 there, nearest (rows 0, 8, …) not
    sample = ExemplarSample(base.sample_id, base.image, mask, base.reference)
    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("mask", args[0][0, 8].clone())

    for mode in ("bilinear", "nearest"):
        captured.clear()
        handle = pbe_models.pipe.unet.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            build("paint_by_example", pbe_models, mask_resize=mode).edit(sample, 42)
        finally:
            handle.remove()
        keep = 1 - torch.from_numpy(sample.mask.astype(np.float32))[None, None]
        if mode == "bilinear":
            expected = torch.nn.functional.interpolate(keep, size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
            assert (captured["mask"][0, 1:5] == 0.5).all()  # fractional box edge
        else:
            expected = keep[0, 0, ::8, ::8]
        torch.testing.assert_close(captured["mask"], expected)


def test_reference_is_squashed_to_224_and_clip_normalised():
    from methods.paint_by_example import reference_tensor

    ref = np.zeros((40, 28, 3), np.uint8)
    ref[..., 0] = 255
    x = reference_tensor(ref)
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x[0, :, 100, 100], torch.tensor([(1 - 0.48145466) / 0.26862954, -0.4578275 / 0.26130258,
                                                                -0.40821073 / 0.27577711]))


def test_off_canvas_sources_are_resized_back():
    sample = make_sample("900100376112")
    method = build("sd_inpaint", load_models(TINY_INPAINT), prompt_template="a photo of {category}")
    result = method.edit(sample, 42)
    assert result.image.shape == (56, 72, 3) and result.info["resized_to_canvas"]
    assert result.info["prompt"] == "a photo of coco"


def test_sd_inpaint_template_and_model_checks(pbe_models):
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['label'\]"):
        METHODS.get("sd_inpaint").build({"prompt_template": "a {label}"})
    with pytest.raises(TypeError, match="needs an inpainting model"):
        build("sd_inpaint", pbe_models)
    with pytest.raises(TypeError, match="needs a Paint-by-Example model"):
        build("paint_by_example", load_models(TINY_INPAINT))
    with pytest.raises(ValueError, match="scheduler must be one of"):
        METHODS.get("paint_by_example").build({"scheduler": "euler"})


def test_paint_by_example_loads_from_a_local_directory(pbe_models, tmp_path):
    """The pretrained path (hub id or local dir) with the component-wise loading diffusers 0.42.1 needs."""
    pbe_models.pipe.save_pretrained(tmp_path / "pbe")
    loaded = load_models({"name": "local", "source": "pretrained", "pipeline": "paint_by_example",
                          "path": str(tmp_path / "pbe"), "local_files_only": True, "device": "cpu"})
    assert loaded.spec.identity == f"pretrained:{tmp_path / 'pbe'}"
    for name in ("unet", "vae", "image_encoder"):
        ours, theirs = getattr(pbe_models.pipe, name).state_dict(), getattr(loaded.pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    sample = make_sample("000000001773")
    np.testing.assert_array_equal(build("paint_by_example", loaded).edit(sample, 1).image,
                                  build("paint_by_example", pbe_models).edit(sample, 1).image)


def test_exemplar_run_scores_set_metrics_per_dataset_and_method(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITLAB_CACHE", str(tmp_path / "cache"))
    cfg = compose(["method=[identity,paint_by_example,sd_inpaint]", "features=smoke",
                   "model@method.paint_by_example.model=tiny_pbe", "model@method.sd_inpaint.model=tiny_inpaint",
                   "method.paint_by_example.steps=2", "method.paint_by_example.resolution=64",
                   "method.sd_inpaint.steps=2", "method.sd_inpaint.resolution=64",
                   "metrics=[fid@pbe,clip_region@pbe,time]", "metric_device=cpu"])
    cfg["dataset"] = {"name": "cocoee", "root": str(write_cocoee(tmp_path / "test_bench", ids=(1773, 3419, 900100376112)))}
    cfg["out_dir"] = str(tmp_path / "run")
    for name in ("paint_by_example", "sd_inpaint"):
        cfg["method"][name]["model"]["device"] = "cpu"
    summary = run(OmegaConf.create(cfg))
    board = summary["leaderboard"].set_index("method")
    assert sorted(board.index) == ["identity", "paint_by_example", "sd_inpaint"]
    assert (board["n"] == 3).all() and (board["failed"] == 0).all()
    assert abs(board.loc["identity", "fid@pbe"]) < 1e-4  # outputs = sources = the reference set
    assert board.loc["paint_by_example", "fid@pbe"] > 0 and np.isfinite(board["clip_region@pbe"]).all()
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    fid_rows = scores[scores["metric"] == "fid@pbe"]
    assert len(fid_rows) == 3 and fid_rows["sample_id"].isna().all() and (fid_rows["weight"] == 3).all()
    assert len(scores[scores["metric"] == "clip_region@pbe"]) == 9
    store = next((tmp_path / "run" / "store" / "cocoee").glob("paint_by_example-*"))
    set_scores = json.loads((store / "_sets" / "scores.json").read_text())
    assert set_scores["fid@pbe"]["settings"]["reference"].startswith("sources") and set_scores["fid@pbe"]["n"] == 3
    record = json.loads((store / "all" / "000000001773.json").read_text())
    assert record["model"]["model"] == "random:paint_by_example-tiny:seed0" and record["info"]["scheduler"] == "PNDMScheduler"
    assert record["info"]["resized_to_canvas"] and record["output"]["size"] == [72, 56]
    md = (tmp_path / "run" / "leaderboard.md").read_text()
    assert "SMOKE RUN" in md and "clip-vit-b32-tiny:random-seed42" in md

    # a rerun reuses every output, every cached feature and every set value
    features_file = next((store / "_sets").glob("fid@pbe-*.npz"))
    before = features_file.stat().st_mtime_ns
    again = run(OmegaConf.create(cfg))
    assert all(info["reused"] == 3 for info in again["edit"].values())
    assert features_file.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(again["leaderboard"], summary["leaderboard"])

    # a shard alone never reports a set-level value (FID over a subset would be a different number)
    # (and a sharded job skips the report stage: the merge run with shard.count=1 reports)
    from harness.data.base import open_dataset
    from harness.metrics.base import SetMetric
    from harness.pipeline import plan_methods, plan_metrics
    from harness.scoring import score_stage

    shard_cfg = OmegaConf.to_container(OmegaConf.create(dict(cfg, shard={"index": 0, "count": 2})), resolve=True)
    sharded = run(OmegaConf.create(shard_cfg | {"stages": ["score", "report"]}))
    assert "leaderboard" not in sharded
    dataset = open_dataset(shard_cfg["dataset"], shard_cfg["shard"])
    plans = plan_methods(shard_cfg["method"], shard_cfg["model"], dataset)
    classes = plan_metrics(shard_cfg["metrics"], dataset)
    assert any(issubclass(c, SetMetric) for c in classes)
    shard_scores = score_stage(shard_cfg, dataset, Path(shard_cfg["out_dir"]), plans, classes)
    assert shard_scores.loc[shard_scores["metric"] == "fid@pbe", "value"].isna().all()
    assert shard_scores.loc[shard_scores["metric"] == "clip_region@pbe", "value"].notna().any()


def test_non_finite_outputs_fail_instead_of_turning_black(pbe_models, monkeypatch):
    from harness.diffusion.numerics import NonFiniteError

    method = build("paint_by_example", pbe_models)
    vae = method.pipe.vae
    monkeypatch.setattr(vae, "decode", lambda z, return_dict=False: (torch.full((1, 3, 64, 64), float("nan")),))
    with pytest.raises(NonFiniteError, match="pipeline output: 12288 NaN"):
        method.edit(make_sample("000000001773"), 42)
