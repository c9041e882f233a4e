"""Time per 512² edit of the fast drag methods (Inpaint4Drag, FastDrag, LightningDrag) with full-size random weights,
split into load (model, components, setup), warm-up (first edit: CUDA graphs, kernel choice) and per-image
(median of repeated edits), next to the released code where it runs on the same GPU and weights. Called by
`benchmarks/bench_drag_methods.py --methods inpaint4drag fastdrag lightningdrag [--releases DIR]`.

Released code (`--releases DIR` holding the fetched `Inpaint4Drag/` and `FastDrag/` files; never committed):
- Inpaint4Drag: `evaluation.py::ImageProcessor.process_single_image` with its pipeline built as its
  `_setup_pipeline` does (LCMScheduler, LoRA loaded and fused, TAESD) from the same random weights; its own
  per-stage timer gives warp + inpaint (the paper's per-edit time) and the whole call (PNG load and save too).
- FastDrag: its `run_drag` needs diffusers 0.24 and reloads the models for every image (Q-11), so only its
  warpage + BNNI functions (`utils/continuous_drag.py`) are timed here, on the same fp16 latent on the GPU.
"""
from __future__ import annotations

import importlib.util
import pickle
import statistics
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.bench_regiondrag import synthetic_sample
from benchmarks.common import timed, timed_call
from harness.models import load_models
from harness.registry import METHODS
from harness.types import DragSample

MODELS = {  # (GPU, --smoke)
    "inpaint4drag": ({"name": "random_sd15_inpaint", "source": "random", "pipeline": "sd_inpaint", "arch": "sd15",
                      "dtype": "float16", "device": "cuda"},
                     {"name": "tiny_inpaint", "source": "random", "pipeline": "sd_inpaint", "arch": "tiny", "device": "cpu"}),
    "fastdrag": ({"name": "random_sd15", "source": "random", "arch": "sd15", "dtype": "float16", "device": "cuda"},
                 {"name": "tiny", "source": "random", "arch": "tiny", "device": "cpu"}),
}
MODELS["lightningdrag"] = MODELS["inpaint4drag"]  # an SD 1.5 inpainting UNet under its own modules
SMOKE_CONFIG = {"inpaint4drag": {"preset": "app", "steps": 2}, "fastdrag": {"steps": 4, "inversion_strength": 0.5},
                "lightningdrag": {"steps": 2, "candidates": 1}}
VARIANTS = {"inpaint4drag": {"eager": {"cuda_graphs": False}}, "fastdrag": {"one_copy": {"batch_of_two": False}},
            # the release makes 4 candidates per call; one candidate is the time of the image scored
            "lightningdrag": {"one_candidate": {"candidates": 1}, "lcm": {"preset": "lcm"}}}


def region_sample(size: int) -> DragSample:
    """The RegionDrag benchmark image with a user region (its handle quad) and one handle→target pair, as
    DragBench's i4p inputs look (the full-image mask of the synthetic sample would warp every pixel)."""
    base = synthetic_sample(size)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(base.regions[0].handle).astype(np.int32)], 1)
    return DragSample("bench/fast/0", base.image, base.prompt, np.round(base.handles), np.round(base.targets),
                      mask.astype(bool))


def staged(name: str, smoke: bool, size: int, releases: Path | None, repeat: int = 5) -> dict[str, Any]:
    """load / warm-up / per-image seconds of `name` (and of its release where it runs)."""
    sample = region_sample(size)

    def load():
        models = load_models(MODELS[name][1 if smoke else 0])
        method = METHODS.get(name).build(SMOKE_CONFIG[name] if smoke else {})
        method.setup(models)
        return models, method

    (models, method), load_s = timed_call(load)
    warmup_s = timed(lambda: method.edit(sample, 42))
    times = [timed(lambda: method.edit(sample, 42)) for _ in range(1 if smoke else repeat)]
    per_image = statistics.median(times)
    run = {"load_s": load_s, "warmup_s": warmup_s, "per_image_s": per_image, "per_image_all_s": times,
           "total_s": per_image, "lora_s": 0.0, "edit_s": per_image, "peak_mib": None, "info": {},
           "model": models.describe(), "config": method.describe()["config"]}
    for label, change in VARIANTS[name].items():  # per-image time of a switch (outputs: see the method docs)
        variant = METHODS.get(name).build({**(SMOKE_CONFIG[name] if smoke else {}), **change})
        variant.setup(models)
        variant.edit(sample, 42)
        run[f"per_image_{label}_s"] = statistics.median(timed(lambda: variant.edit(sample, 42)) for _ in range(3))
    # releases timed beside ours (LightningDrag's entry point is its Gradio app's loader: not timed)
    release = {"inpaint4drag": release_inpaint4drag, "fastdrag": release_fastdrag}.get(name)
    if releases is not None and release is not None:
        try:
            run["release"] = release(releases, models, sample, 1 if smoke else repeat)
            ours = run["release"].get("ours_warp_bnni_s", per_image)  # FastDrag: the warp against the warp
            run["release_over_ours"] = run["release"]["per_image_s"] / ours
        except Exception as exc:  # a release that cannot run here must not lose our numbers
            run["release"] = {"failed": f"{type(exc).__name__}: {exc}"}
    return run


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def release_inpaint4drag(releases: Path, models, sample: DragSample, repeat: int) -> dict[str, Any]:
    import copy

    from diffusers import LCMScheduler, StableDiffusionInpaintPipeline

    from harness.models.components import load_component

    root = releases / "Inpaint4Drag"
    sys.modules.setdefault("utils", types.ModuleType("utils")).__path__ = [str(root / "utils")]
    sys.modules["utils.evaluator"] = types.SimpleNamespace(DragEvaluator=None)  # scoring only: not timed
    evaluation = _import(root / "evaluation.py", "release_inpaint4drag_evaluation")

    def setup():  # `_setup_pipeline` on the same random weights (hub loading replaced)
        pipe = StableDiffusionInpaintPipeline(**{**models.pipe.components, "unet": copy.deepcopy(models.unet)})
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
        pipe.load_lora_weights({k: v.to(models.device, models.dtype) for k, v in load_component("lcm_lora_sd15", models).items()})
        pipe.fuse_lora()
        pipe.vae = load_component("taesd", models)
        pipe.cached_prompt_embeds = pipe.encode_prompt("", device=models.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)[0]
        processor = evaluation.ImageProcessor.__new__(evaluation.ImageProcessor)
        processor.pipe = pipe
        return processor

    processor, load_s = timed_call(setup)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        from PIL import Image

        Image.fromarray(sample.image).save(folder / "original_image.png")
        points = np.stack([sample.handles, sample.targets], 1).reshape(-1, 2).astype(int).tolist()
        with open(folder / "meta_data_i4p.pkl", "wb") as f:
            pickle.dump({"mask": sample.mask.astype(np.uint8), "points": points}, f)
        warmup_s = timed(lambda: processor.process_single_image(folder, Path(tmp) / "out"))
        stages = [processor.process_single_image(folder, Path(tmp) / "out") for _ in range(repeat)]
    edit = [s["warp"] + s["inpaint"] for s in stages]
    return {"load_s": load_s, "warmup_s": warmup_s, "per_image_s": statistics.median(edit),
            "whole_call_s": statistics.median(sum(s.values()) for s in stages), "stages_s": stages,
            "what": "evaluation.py process_single_image: warp + inpaint (its own perf_counter timer)"}


def release_fastdrag(releases: Path, models, sample: DragSample, repeat: int) -> dict[str, Any]:
    stretch = _import(releases / "FastDrag" / "utils" / "continuous_drag.py", "release_fastdrag_continuous_drag")
    from methods.fastdrag import latent_mask, supervision_points

    latent = torch.randn(1, 4, sample.image.shape[0] // 8, sample.image.shape[1] // 8, device=models.device,
                         dtype=models.dtype, generator=torch.Generator(models.device).manual_seed(0))
    mask = latent_mask(sample.mask, models.device)
    handles = list(supervision_points(sample.handles, sample.size).to(models.device))
    targets = list(supervision_points(sample.targets, sample.size).to(models.device))

    def warp():
        return stretch.drag_stretch_multipoint_ratio_interp(latent.clone(), handles, targets, mask, fill_mode="interpolation")
    warmup_s = timed(warp)
    times = [timed(warp) for _ in range(max(1, repeat // 2))]
    from harness.diffusion.latent_warp import bnni, warp_latent

    ours = [timed(lambda: bnni(warp_latent(latent, mask, torch.stack(handles) / 4, torch.stack(targets) / 4)))
            for _ in range(max(1, repeat // 2))]
    return {"warmup_s": warmup_s, "per_image_s": statistics.median(times), "ours_warp_bnni_s": statistics.median(ours),
            "what": "utils/continuous_drag.py warpage + BNNI only (run_drag needs diffusers 0.24; Q-11 reloads models)"}
