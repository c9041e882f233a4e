"""Test-only methods and dataset loaders for the reliability tests.

Importable in-process and by `python -m harness plugins=[tests.reliability_plugins]` in a subprocess (the
tests run from the project root). Nothing here is registered unless a test imports it.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.data.base import DataError, DatasetLoader
from harness.data.checks import binary_mask, check_inside, check_keys, check_str, point_array, rle_mask
from harness.data.safe_io import read_image, read_json, read_mask
from harness.diffusion.numerics import check_finite
from harness.method import EditMethod
from harness.metrics.base import Metric, MetricValue
from harness.registry import DATASETS, METHODS, METRICS
from harness.types import DragSample, EditResult, PromptEditSample


# ------------------------------------------------------------------------------------------- methods


@dataclass
class SlowConfig:
    delay: float = 0.3  # seconds per sample: gives a SIGKILL somewhere to land


@METHODS.register("test_slow")
class SlowNoise(EditMethod):
    """Sleeps, then adds seeded noise: a deterministic output that differs from the input."""

    name = "test_slow"
    needs_model = False
    Config = SlowConfig

    def edit(self, sample, seed):
        time.sleep(self.config.delay)
        rng = np.random.default_rng(seed)
        noise = rng.integers(-20, 21, sample.image.shape)
        return EditResult(image=np.clip(sample.image.astype(int) + noise, 0, 255).astype(np.uint8))


@dataclass
class NanConfig:
    steps: int = 5
    nan_step: int = 2
    on: str = "square"  # NaN only on samples whose id contains this


@METHODS.register("test_nan_at_step")
class NanAtStep(EditMethod):
    """A toy denoising loop that turns its latent NaN at step `nan_step`, checking after each step as
    real methods do."""

    name = "test_nan_at_step"
    needs_model = False
    Config = NanConfig

    def edit(self, sample, seed):
        x = torch.from_numpy(sample.image.astype(np.float32) / 127.5 - 1)
        for step in range(self.config.steps):
            x = x * 0.99
            if step == self.config.nan_step and self.config.on in sample.sample_id:
                x[0, 0, 0] = float("nan")
            check_finite(x, "denoising", step, timestep=1000 - 200 * step)
        return EditResult(image=((x.numpy() + 1) * 127.5).astype(np.uint8))


@dataclass
class OomConfig:
    on: str = "square"  # raise on samples whose id contains this


@METHODS.register("test_oom")
class OomOnSample(EditMethod):
    """Raises CUDA's out-of-memory error on one sample, while holding a tensor in a reference cycle that only
    a garbage collection frees; the next sample reports whether that memory was released before it ran."""

    name = "test_oom"
    needs_model = False
    Config = OomConfig
    last_allocation: weakref.ref | None = None

    def edit(self, sample, seed):
        info = {}
        if OomOnSample.last_allocation is not None:
            info["previous_allocation_released"] = OomOnSample.last_allocation() is None
        if self.config.on in sample.sample_id:
            block = torch.zeros(1 << 20)
            cycle: dict = {"tensor": block}
            cycle["self"] = cycle
            OomOnSample.last_allocation = weakref.ref(block)
            del block
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return EditResult(image=sample.image.copy(), info=info)


@METHODS.register("test_float_nan_output")
class FloatNanOutput(EditMethod):
    """Returns a float image with a NaN pixel (a method that forgot its uint8 conversion)."""

    name = "test_float_nan_output"
    needs_model = False
    families = ("drag", "prompt")

    def edit(self, sample, seed):
        image = sample.image.astype(np.float32)
        image[0, 0, 0] = np.nan
        return EditResult(image=image)


# ------------------------------------------------------------------------------------------- metrics


@METRICS.register("test_mad")
class MeanAbsDiff(Metric):
    """Mean absolute pixel difference to the source, after a short pause (so a kill can land in scoring):
    a deterministic score that needs no network."""

    id = "test_mad"
    families = ("drag", "prompt")

    def compute(self, sample, edited, record):
        time.sleep(0.1)
        return MetricValue(float(np.abs(edited.astype(float) - sample.image).mean()))


# ------------------------------------------------------------------------------------------ datasets


@DATASETS.register("test_prompt")
class PromptDataset(DatasetLoader):
    """One generated prompt-editing sample: a stand-in for PIE-Bench where no loader is registered."""

    name = "test_prompt"
    family = "prompt"

    def list_ids(self):
        return ["test_prompt/0_random/000000000000"]

    def load_sample(self, sample_id):
        image = np.full((64, 64, 3), 128, np.uint8)
        return PromptEditSample(sample_id=sample_id, image=image, source_prompt="a cat",
                                target_prompt="a [dog]", blended_words=("cat", "dog"))


@DATASETS.register("test_folder")
class FolderDataset(DatasetLoader):
    """A simple on-disk drag format, read through `harness.data.safe_io` and checked with `harness.data.checks`:

        <root>/<category>/<name>/image.png     RGB
                                 mask.png      L, 0/255, same size (or `mask_rle` in sample.json)
                                 sample.json   {"prompt": str, "handles": [[x, y], ...], "targets": [[x, y], ...]}
    """

    name = "test_folder"
    family = "drag"

    def list_ids(self):
        if self.root is None or not Path(self.root).is_dir():
            raise DataError(f"{self.root}: field 'root': not a directory")
        return [f"{self.name}/{p.parent.parent.name}/{p.parent.name}" for p in Path(self.root).glob("*/*/sample.json")]

    def load_sample(self, sample_id):
        root = Path(self.root)
        folder = root.joinpath(*sample_id.split("/")[1:])
        meta_path = folder / "sample.json"
        meta = check_keys(read_json(meta_path, root=root), meta_path, ("prompt", "handles", "targets"), exact=False)
        prompt = check_str(meta["prompt"], meta_path, "prompt")
        image = read_image(folder / "image.png", "image", root=root)
        h, w = image.shape[:2]
        if "mask_rle" in meta:
            values = rle_mask(meta["mask_rle"], (h, w), f"{meta_path}: field 'mask_rle'").astype(np.uint8)
            mask = binary_mask(values, meta_path, "mask_rle", (w, h), "image.png")
        else:
            mask_path = folder / "mask.png"
            mask = binary_mask(read_mask(mask_path, "mask", root=root), mask_path, "mask", (w, h), "image.png")
        handles, targets = (point_array(meta[f], meta_path, f) for f in ("handles", "targets"))
        check_inside(handles, meta_path, "handles", (w, h))
        check_inside(targets, meta_path, "targets", (w, h))
        if len(handles) != len(targets):
            raise DataError(f"{meta_path}: field 'targets': {len(targets)} targets for {len(handles)} handles")
        return DragSample(sample_id=sample_id, image=image, prompt=prompt, handles=handles.astype(np.float64),
                          targets=targets.astype(np.float64), mask=mask, category=sample_id.split("/")[1])


@DATASETS.register("test_hostile_ids")
class HostileIds(DatasetLoader):
    """Sample ids that try to leave the store, next to one good id."""

    name = "test_hostile_ids"
    family = "drag"
    IDS = ("test_hostile_ids/c/good", "test_hostile_ids/../../escaped", "/tmp/absolute", "test_hostile_ids/c/..",
           "test_hostile_ids/c\\..\\..\\x")

    def list_ids(self):
        return list(self.IDS)

    def load_sample(self, sample_id):
        image = np.full((32, 32, 3), 90, np.uint8)
        return DragSample(sample_id=sample_id, image=image, prompt="", handles=[[4, 4]], targets=[[8, 8]],
                          mask=np.ones((32, 32), bool))
