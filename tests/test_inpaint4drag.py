"""Inpaint4Drag (methods/inpaint4drag.py) on the tiny inpainting model with tiny LCM-LoRA and TAESD.

Parity with the release (`evaluation.py::ImageProcessor.process_single_image` @126ac0c, run from a fetched
copy named by EDITLAB_RELEASES, never committed): its pipeline built the release's way (LCMScheduler, LoRA
loaded and fused, TAESD swapped in, cached "" embedding) from the same tiny weights, its unseeded noise
fixed by seeding the global RNG with the sample's seed; per-step latents and the final uint8 image must be
equal. Without the release: the `app` preset against a plain diffusers call, and both composites (Q-2)."""
from __future__ import annotations

import copy
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.models.components import load_component
from harness.models.provider import load_models
from harness.types import DragSample
from methods.inpaint4drag import Inpaint4Drag, Inpaint4DragConfig, snap8

TINY_INPAINT = {"name": "tiny_inpaint", "source": "random", "pipeline": "sd_inpaint", "arch": "tiny", "seed": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def models():
    return load_models(TINY_INPAINT)


def square_sample(size=(72, 64)) -> DragSample:
    rng = np.random.default_rng(3)
    w, h = size
    image = (rng.random((h, w, 3)) * 80 + 80).astype(np.uint8)
    image[20:36, 18:34] = (220, 40, 30)
    mask = np.zeros((h, w), bool)
    mask[20:36, 18:34] = True
    return DragSample("t/c/square", image, "", [(25, 27)], [(33, 30)], mask)


def method(models, **config) -> Inpaint4Drag:
    m = Inpaint4Drag(Inpaint4DragConfig(**config))
    m.setup(models)
    return m


def record_latents(pipe, store: list) -> dict:
    def callback(_pipe, _i, _t, kwargs):
        store.append(kwargs["latents"].clone())
        return kwargs
    return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["latents"]}


def test_app_preset_is_one_lcm_inpaint_call_on_the_grid_preview(models):
    m = method(models, preset="app", steps=2)
    sample = square_sample((66, 60))  # not multiples of 8: snapped to 64×64 and back
    assert snap8(sample.size) == (64, 64)
    ours = m.edit(sample, seed=7).image
    from harness.diffusion.warping import bi_warp, grid_overlay, preview

    warp = bi_warp(sample.editing_mask.astype(np.uint8), np.array([[25, 27], [33, 30]]), 5)
    painted = Image.fromarray(grid_overlay(preview(sample.image, warp), warp.inpaint_mask)).resize((64, 64))
    mask = Image.fromarray(warp.inpaint_mask * 255).resize((64, 64), Image.NEAREST)
    out = m.pipe(prompt_embeds=m.prompt_embeds, image=painted, mask_image=mask, height=64, width=64, guidance_scale=1.0,
                 num_inference_steps=2, strength=1.0, output_type="np", generator=torch.Generator().manual_seed(7)).images[0]
    keep = (np.asarray(mask)[..., None] // 255).astype(np.uint8)
    expected = (out * 255).astype(np.uint8) * keep + np.asarray(painted) * (1 - keep)
    assert np.array_equal(ours, np.asarray(Image.fromarray(expected).resize(sample.size, Image.BICUBIC)))
    assert np.array_equal(ours, m.edit(sample, seed=7).image)  # seeded (Q-3 switch)


class ConstantPipe:
    """Stands in for the pipeline: a mid-grey inpainting, to check the composites alone."""

    scheduler = type("S", (), {"timesteps": torch.tensor([999])})()

    def __call__(self, image, mask_image, output_type, **_):
        w, h = image.size
        grey = np.full((h, w, 3), 128, np.uint8)
        return type("Out", (), {"images": [Image.fromarray(grey) if output_type == "pil" else grey / 255.0]})()


@pytest.mark.parametrize("preset", ["benchmark", "app"])
def test_composites_q2(models, preset):
    m = method(models, preset=preset, lora_component="", vae_component="")
    m.pipe = ConstantPipe()
    sample = square_sample()
    out = m.edit(sample, 0).image
    from harness.diffusion.warping import bi_warp, preview

    warp = bi_warp(sample.editing_mask.astype(np.uint8), np.array([[25, 27], [33, 30]]), 5)
    region = sample.editing_mask if preset == "benchmark" else warp.inpaint_mask.astype(bool)
    assert (out[region] == 128).all()  # benchmark: the whole user region is replaced, app: the inpaint mask only
    assert np.array_equal(out[~region], preview(sample.image, warp)[~region])  # the warped preview elsewhere


def release_pipe(models):
    """The release's `_setup_pipeline` on the tiny weights: LCMScheduler, LoRA loaded and fused into its
    own UNet copy, TAESD, cached "" embedding (hub loading replaced by the same tiny components)."""
    from diffusers import LCMScheduler, StableDiffusionInpaintPipeline

    base = models.pipe
    pipe = StableDiffusionInpaintPipeline(**{**base.components, "unet": copy.deepcopy(base.unet)})
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(dict(load_component("lcm_lora_sd15", models)))
    pipe.fuse_lora()
    pipe.vae = load_component("taesd", models)
    pipe.cached_prompt_embeds = pipe.encode_prompt("", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    return pipe


@pytest.mark.skipif(not os.environ.get("EDITLAB_RELEASES"), reason="EDITLAB_RELEASES (fetched releases) not set")
def test_benchmark_preset_equals_the_release(models, tmp_path, monkeypatch):
    release = Path(os.environ["EDITLAB_RELEASES"]) / "Inpaint4Drag"
    monkeypatch.syspath_prepend(str(release))
    for name in [n for n in sys.modules if n == "utils" or n.startswith("utils.")]:
        monkeypatch.delitem(sys.modules, name)
    import evaluation

    sample = square_sample()
    (tmp_path / "in").mkdir()
    Image.fromarray(sample.image).save(tmp_path / "in" / "original_image.png")
    with open(tmp_path / "in" / "meta_data_i4p.pkl", "wb") as f:
        pickle.dump({"mask": sample.editing_mask.astype(np.uint8), "points": [[25, 27], [33, 30]]}, f)
    processor = evaluation.ImageProcessor.__new__(evaluation.ImageProcessor)
    pipe, theirs = release_pipe(models), []

    class Recording:
        cached_prompt_embeds = pipe.cached_prompt_embeds

        def __call__(self, **kwargs):
            return pipe(**kwargs, **record_latents(pipe, theirs))

    processor.pipe = Recording()
    torch.manual_seed(42)  # the release draws unseeded (global RNG) noise
    processor.process_single_image(tmp_path / "in", tmp_path / "out")
    reference = np.asarray(Image.open(tmp_path / "out" / "dragged_image.png"))

    m, ours = method(models), []
    call = m.pipe.__call__
    monkeypatch.setattr(type(m.pipe), "__call__", lambda self, **kw: call(**kw, **record_latents(self, ours)))
    edited = m.edit(sample, seed=42).image
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b), (a - b).abs().max()
    assert np.array_equal(edited, reference)


def test_the_graphed_unet_wrapper_is_transparent_to_the_pipeline(models):
    """GraphedPipelineUNet (CUDA graphs on GPUs; eager here) must not change what the pipeline computes."""
    from harness.diffusion.lcm import GraphedPipelineUNet

    m = method(models, preset="app", steps=2)
    plain = m.edit(square_sample(), 3).image
    m.pipe.unet = GraphedPipelineUNet(m.pipe.unet)
    assert np.array_equal(plain, m.edit(square_sample(), 3).image)
