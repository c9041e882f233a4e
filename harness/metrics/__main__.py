"""Score one pair by hand:

    python -m harness.metrics compute <metric-id> --source A.png --edited B.png [--points P] [--mask M] [key=value ...]

The sample is built for the metric's family. Drag metrics: `--points` is a JSON file or inline JSON:
`{"handles": [[x, y], ...], "targets": [[x, y], ...]}` or the interleaved DragBench list
`[[hx, hy], [tx, ty], ...]`; `prompt=...`. PIE-Bench (prompt) metrics:

    python -m harness.metrics compute pie_psnr_unedit_part --source A.png --edited B.png --mask M.png \
        prompt="a cat" target_prompt="a [dog]"

`--mask` is a PNG (nonzero = the edited region, used as is) or a PIE-Bench RLE as JSON (the list, or a
`mapping_file.json` entry with a `mask` field; decoded on 512×512 with the border forced to 1, as the
dataset loader does); `--ground-truth G.png` is the image the `*_gt@…` metrics score against (VFD-Bench's
`gt.png`, or the original image for a drag-back round trip); `prompt` is the source prompt, `target_prompt` the editing prompt (`[ ]` markers are
removed before encoding). A metric that reads a field names the missing flag. Other `key=value` pairs:
`features=standard|smoke|random_sd21` (default `standard`: the published networks), any field of that
features config (`lpips_backbone=...`, `clip_vitl14=...`, `dino_vitb8=...`, `seed=42`, ...),
`dift_model=<model config name>`, `device=cpu|cuda`. Prints one JSON object.
`python -m harness.metrics list` prints the metric ids.

Set-level metrics (`fid@pbe`, `fid_inception@pbe`) compare two folders of images instead:

    python -m harness.metrics compute fid_inception@pbe --source REF_DIR --edited DIR [weights_path=...]

`--source` is the reference set (its statistics are cached), `--edited` the results. `weights_path` is
the metric's network (`inception_weights` for `fid_inception@pbe`, `clip_vit_b32` for `fid@pbe`); other
keys: `features=...`, `device=...`, `batch_size=50`, `num_workers=N`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image


def _read_image(path: str, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise SystemExit(f"error: {what} image not found: {path}")
    except OSError as exc:
        raise SystemExit(f"error: cannot read {what} image {path}: {exc}")


def parse_points(text: str | None) -> tuple[np.ndarray, np.ndarray]:
    if not text:
        return np.zeros((0, 2)), np.zeros((0, 2))
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --points is neither a JSON file nor valid JSON: {exc}")
    if isinstance(data, dict):
        handles, targets = np.asarray(data.get("handles"), float), np.asarray(data.get("targets"), float)
    else:
        points = np.asarray(data, float)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) % 2:
            raise SystemExit("error: --points list must hold an even number of [x, y] pairs (handle, target, ...)")
        handles, targets = points[0::2], points[1::2]
    if handles.shape != targets.shape or handles.ndim != 2 or handles.shape[1:] != (2,):
        raise SystemExit("error: --points needs as many [x, y] handles as targets")
    return handles, targets


def read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """Bool H×W edit mask from a PNG (nonzero in any channel = edited) or a PIE-Bench RLE JSON file."""
    from harness.data.base import DataError
    from harness.data.pie_bench import MASK_SHAPE, decode_rle

    if not Path(path).is_file():
        raise ValueError(f"--mask file not found: {path}")
    if Path(path).suffix.lower() == ".json":
        data = json.loads(Path(path).read_text())
        rle = data.get("mask") if isinstance(data, dict) else data
        try:
            mask = decode_rle(rle, MASK_SHAPE, where=f"--mask {path}")
        except DataError as exc:
            raise ValueError(str(exc)) from None
    else:
        mask = _read_image(path, "mask").any(axis=-1)
    if mask.shape != shape:
        raise ValueError(f"--mask is {mask.shape[1]}x{mask.shape[0]}, the source image {shape[1]}x{shape[0]}"
                         + (" (PIE-Bench RLE masks are 512x512)" if Path(path).suffix.lower() == ".json" else ""))
    return mask


FLAGS = {"mask": "--mask M.png", "prompt": "prompt=...", "target_prompt": "target_prompt=...",
         "ground_truth": "--ground-truth G.png"}


def build_sample(metric_cls, source: np.ndarray, handles: np.ndarray, targets: np.ndarray, mask: np.ndarray | None,
                 prompts: dict[str, str], ground_truth: np.ndarray | None = None):
    """The sample type of the metric's family, after checking the fields the metric reads are given."""
    from harness.types import DragSample, PromptEditSample

    given = {"mask": mask is not None, "ground_truth": ground_truth is not None,
             **{k: k in prompts for k in ("prompt", "target_prompt")}}
    missing = [FLAGS[name] for name in metric_cls.inputs if not given[name]]
    if missing:
        raise ValueError(f"{metric_cls.id} needs {' and '.join(missing)}")
    if "drag" in metric_cls.families:
        h, w = source.shape[:2]
        return DragSample(sample_id="cli/pair/0", image=source, prompt=prompts.get("prompt", ""), handles=handles,
                          targets=targets, mask=np.ones((h, w), bool) if mask is None else mask,
                          ground_truth=ground_truth)
    if "prompt" in metric_cls.families:
        return PromptEditSample(sample_id="cli/pair/0", image=source, source_prompt=prompts.get("prompt", ""),
                                target_prompt=prompts.get("target_prompt", ""), mask=mask, ground_truth=ground_truth)
    raise ValueError(f"{metric_cls.id} scores {'/'.join(metric_cls.families)} samples; `compute` builds drag and prompt "
                     "samples only (score exemplar runs through the harness)")


def compute(metric_id: str, source: np.ndarray, edited: np.ndarray, points: tuple[np.ndarray, np.ndarray],
            options: dict[str, str], mask_path: str | None = None,
            ground_truth: np.ndarray | None = None) -> dict[str, Any]:
    """One metric on one pair; `points` = (handles, targets), (x, y) pixels."""
    from harness.config import compose
    from harness.metrics.base import MetricContext
    from harness.registry import METRICS

    cls = METRICS.get(metric_id)
    overrides = [f"features={options.pop('features', 'standard')}"]
    if "dift_model" in options:
        overrides.append(f"model@features.dift_model={options.pop('dift_model')}")
    features = compose(overrides)["features"]
    apply_feature_options(features, options)
    device = options.pop("device", "auto")
    prompts = {k: options.pop(k) for k in ("prompt", "target_prompt") if k in options}
    if options:
        raise SystemExit(f"error: unknown option(s) {sorted(options)}; valid: prompt, target_prompt, features, "
                         f"dift_model, device, or a field of the features config ({', '.join(sorted(features))})")
    mask = read_mask(mask_path, source.shape[:2]) if mask_path else None
    if ground_truth is not None and ground_truth.shape != source.shape:
        raise ValueError(f"--ground-truth is {ground_truth.shape[1]}x{ground_truth.shape[0]}, the source image "
                         f"{source.shape[1]}x{source.shape[0]}")
    sample = build_sample(cls, source, *points, mask, prompts, ground_truth)
    metric = cls(MetricContext(features, device=device))
    value = metric.compute(sample, edited, {})
    return {"metric": metric_id, "value": value.value, "weight": value.weight, "settings": metric.settings()}


def apply_feature_options(features: dict[str, Any], options: dict[str, str]) -> None:
    """Move the command-line options that name a field of the features config into it, read as the config
    file would read them (`false` → False, `43` → 43): a string "false" would otherwise switch a flag on."""
    for key in [k for k in options if k in features]:
        value = options.pop(key)
        try:
            features[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise SystemExit(f"error: option {key}={value!r} is not a valid value: {exc}") from None


def compute_folders(metric_id: str, reference: str, edited: str, options: dict[str, str]) -> dict[str, Any]:
    """A set-level metric on two folders of images."""
    from harness.config import compose
    from harness.metrics.base import MetricContext
    from harness.registry import METRICS

    cls = METRICS.get(metric_id)
    for what, folder in (("source", reference), ("edited", edited)):
        if not Path(folder).is_dir():
            raise SystemExit(f"error: {metric_id} is a set-level metric: --{what} must be a folder of images, got {folder}")
    features = compose([f"features={options.pop('features', 'standard')}"])["features"]
    if "weights_path" in options:
        features[cls.network_option] = options.pop("weights_path")
    if "batch_size" in options:
        features["fid_batch_size"] = int(options.pop("batch_size"))
    num_workers = int(options.pop("num_workers")) if "num_workers" in options else None
    device = options.pop("device", "auto")
    if options:
        raise SystemExit(f"error: unknown option(s) {sorted(options)}; valid: weights_path, features, device, "
                         f"batch_size, num_workers")
    metric = cls(MetricContext(features, device=device))
    result = metric.compare_folders(reference, edited, num_workers=num_workers)
    return {"metric": metric_id, **result, "settings": metric.extractor().describe()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list metric ids")
    p = sub.add_parser("compute", help="score one (source, edited) pair")
    p.add_argument("metric")
    p.add_argument("--source", required=True)
    p.add_argument("--edited", required=True)
    p.add_argument("--points", default=None)
    p.add_argument("--mask", default=None, help="edit mask: PNG (nonzero = edited) or PIE-Bench RLE JSON")
    p.add_argument("--ground-truth", default=None, help="ground-truth image of the *_gt@ metrics (VFD-Bench's gt.png)")
    p.add_argument("options", nargs="*", help="key=value")
    args, extra = parser.parse_known_args(argv)
    for flag in ("source", "edited", "points", "mask"):  # `--source=~/x.png` reaches us unexpanded by the shell
        if getattr(args, flag, None):
            setattr(args, flag, os.path.expanduser(getattr(args, flag)))
    from harness.registry import METRICS, UnknownNameError

    if args.command == "list":
        print("\n".join(METRICS.names()))
        return 0
    options = {}
    for item in [*getattr(args, 'options', []), *extra]:
        if "=" not in item:
            parser.error(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        options[key] = value
    try:
        from harness.metrics.base import SetMetric

        if issubclass(METRICS.get(args.metric), SetMetric):
            result = compute_folders(args.metric, args.source, args.edited, options)
        else:
            source, edited = _read_image(args.source, "source"), _read_image(args.edited, "edited")
            truth = _read_image(args.ground_truth, "ground-truth") if args.ground_truth else None
            result = compute(args.metric, source, edited, parse_points(args.points), options, args.mask, truth)
    except (UnknownNameError, OSError, ValueError, RuntimeError) as exc:  # missing weights or files, bad inputs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
