"""The whole job a researcher runs: RegionDrag + LPIPS + both MD metrics over a DragBench-D-sized dataset,
one `python -m harness` process, wall clock from launch to the written report (model loading included).

    python benchmarks/bench_end_to_end.py                    # GPU: 205 samples, random_sd15 + random_sd21
    python benchmarks/bench_end_to_end.py --protocol regiondrag   # issue #20's job: RegionDrag's LPIPS + MD only (60 s)
    python benchmarks/bench_end_to_end.py --smoke            # CPU: 4 small samples, tiny models, no MD (tests the script)
    python benchmarks/bench_end_to_end.py -- score_during_edit=false    # extra Hydra overrides after --
    python benchmarks/bench_end_to_end.py -- method.regiondrag.batch_size=8 tf32_matmul=true   # the fast settings

The full DragBench-D is not on the project's machines, so the script writes a stand-in with its published
statistics (datasets.md §2.3) in the original layout (`<category>/<sample>/original_image.png` +
`meta_data.pkl`): width 512, the 53 heights with their counts (512 ×67, 768 ×40, 341 ×28, …, 40 heights
once), 2/4/6/8/12 points in 108/61/29/5/2 samples, rectangular masks of 5–60 % coverage, smooth
textured images (PNG sizes like photographs', not like noise). Random weights: the numbers time the
pipeline and mean nothing as scores. Writes a JSON with the wall clock, the stage times from run.json,
per-sample edit and metric times, and the store's size.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.common import benchmark_parser, write_result  # noqa: E402

# datasets.md §2.3: heights with their counts; 40 further heights occur once each (range 288–913)
HEIGHT_COUNTS = {512: 67, 768: 40, 341: 28, 682: 5, 384: 4, 640: 4, 288: 4, 340: 3, 767: 2, 639: 2, 656: 2,
                 424: 2, 913: 2}
POINT_COUNTS = {2: 108, 4: 61, 6: 29, 8: 5, 12: 2}
CATEGORIES = ("animals", "art_work", "building_city_view", "building_countryside_view", "human_full_body",
              "human_head", "human_upper_body", "interior_design", "land_scape", "other_objects")
# the job: RegionDrag plus LPIPS and both MD metrics (`--timing-metrics` adds time and peak_mem, which
# keeps the scorer from running during the edit stage: harness/concurrent_scoring.py)
METRICS = ["lpips_alex@dragdiffusion", "lpips_alex@regiondrag", "md_dift@dragdiffusion", "md_dift@regiondrag"]
# issue #20's RegionDrag protocol job (target 60 s): RegionDrag's own metrics only (`--protocol regiondrag`)
PROTOCOL_METRICS = {"both": METRICS, "regiondrag": ["lpips_alex@regiondrag", "md_dift@regiondrag"]}
TARGET_S = {"both": 120.0, "regiondrag": 60.0}
TIMING_METRICS = ["time", "peak_mem"]


def dragbench_heights(rng: np.random.Generator) -> list[int]:
    heights = [h for h, n in HEIGHT_COUNTS.items() for _ in range(n)]
    singles = sorted(set(range(288, 914)) - set(HEIGHT_COUNTS))
    heights += [int(h) for h in rng.choice(singles, size=40, replace=False)]
    rng.shuffle(heights)
    return heights


def textured_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth colour fields plus fine grain: compresses like a photograph, unlike white noise."""
    coarse = rng.random((h // 32 + 2, w // 32 + 2, 3))
    field = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float64)
    grain = rng.normal(0, 6, (h, w, 3))
    return np.clip(field + grain, 0, 255).astype(np.uint8)


def write_dataset(root: Path, n: int, width: int, heights: list[int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    points = [p for p, k in POINT_COUNTS.items() for _ in range(k)]
    rng.shuffle(points)
    for i in range(n):
        h, w = heights[i % len(heights)], width
        folder = root / CATEGORIES[i % len(CATEGORIES)] / f"S_{i:03d}"
        folder.mkdir(parents=True)
        Image.fromarray(textured_image(rng, w, h)).save(folder / "original_image.png")
        coverage = rng.uniform(0.05, 0.6)
        bw, bh = int(w * coverage ** 0.5), int(h * coverage ** 0.5)
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        mask = np.zeros((h, w), np.uint8)
        mask[y0:y0 + bh, x0:x0 + bw] = 1
        pairs = []
        for _ in range(points[i % len(points)] // 2):
            handle = [int(rng.integers(x0, x0 + bw)), int(rng.integers(y0, y0 + bh))]
            target = [int(np.clip(handle[0] + rng.integers(-40, 41), 0, w - 1)),
                      int(np.clip(handle[1] + rng.integers(-40, 41), 0, h - 1))]
            pairs += [handle, target]
        meta = {"prompt": f"a photo of object {i}", "points": pairs, "mask": mask}
        with open(folder / "meta_data.pkl", "wb") as f:
            pickle.dump(meta, f, protocol=4)


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__, "tiny model on the CPU (a check that the script runs)", "result JSON (default: benchmarks/results/end_to_end-<device>.json)")
    parser.add_argument("--samples", type=int, default=205)
    parser.add_argument("--workdir", default=None, help="where to write the dataset and the run (default: a temp dir)")
    parser.add_argument("--timing-metrics", action="store_true", help="also score time and peak_mem")
    parser.add_argument("--protocol", choices=sorted(PROTOCOL_METRICS), default="both",
                        help="both MD/LPIPS protocols (the 2-minute job) or RegionDrag's own (the 60-s job)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the run")
    args = parser.parse_args(argv)
    if args.smoke:  # DIFT at 768² takes seconds per sample on a CPU even with the tiny model
        n, width, heights = 4, 64, [48, 64, 48, 40]
        model = ["model=tiny", "features=smoke"]
        metrics = [m for m in PROTOCOL_METRICS[args.protocol] if not m.startswith("md_dift")]
    else:
        n, width, heights = args.samples, 512, dragbench_heights(np.random.default_rng(0))
        model, metrics = ["model=random_sd15", "features=random_sd21"], PROTOCOL_METRICS[args.protocol]
    if args.timing_metrics:
        metrics = metrics + TIMING_METRICS
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        data, out = Path(tmp) / "DragBench", Path(tmp) / "run"
        t0 = time.perf_counter()
        write_dataset(data, n, width, heights)
        print(f"wrote {n} samples in {time.perf_counter() - t0:.1f} s", flush=True)
        command = [sys.executable, "-m", "harness", "dataset=dragbench_d", f"dataset.root={data}", "method=regiondrag",
                   *model, f"metrics=[{','.join(metrics)}]", f"out_dir={out}", *args.overrides]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, cwd=PROJECT_ROOT)
        wall = time.perf_counter() - t0
        run = json.loads((out / "run.json").read_text())
        records = [json.loads(p.read_text()) for p in (out / "store").rglob("*.json")
                   if not p.name.endswith(".scores.json") and p.name != "method.json"]
        scores = [json.loads(p.read_text()) for p in (out / "store").rglob("*.scores.json")]
        edit_s = [r["timing"]["total_s"] for r in records if r.get("status") == "ok"]
        # digests of every output and every score value: equal digests across runs = identical results
        outputs = sorted((r["sample_id"], r["output"]["sha256"]) for r in records if r.get("status") == "ok")
        values = pd.read_csv(out / "scores.csv").sort_values(["method", "sample_id", "metric"])
        values = values[~values.metric.isin(TIMING_METRICS)][["sample_id", "metric", "value"]]
        store_mib = sum(p.stat().st_size for p in (out / "store").rglob("*") if p.is_file()) / 2 ** 20
    payload = {
        "samples": n, "width": width, "distinct_heights": len(set(heights[:n])),
        "run_command": " ".join(["python", "-m", "harness", *command[3:]]),
        "wall_s": wall, "protocol": args.protocol, "target_s": TARGET_S[args.protocol], "stage_seconds": run.get("stage_seconds"),
        "edit_setup_s": [info.get("setup_s") for info in (run.get("edit_summary") or {}).values()],
        "ok": len(edit_s), "failed": sum(r.get("status") == "failed" for r in records),
        "edit_s_sum": float(np.sum(edit_s)), "edit_s_median": float(np.median(edit_s)) if edit_s else None,
        "scored_samples": len(scores), "store_mib": store_mib,
        "scored_during_edit": run.get("scored_during_edit"),
        "outputs_sha256": hashlib.sha256(json.dumps(outputs).encode()).hexdigest(),
        "output_sha256_by_sample": dict(outputs),
        "failures": {r["sample_id"]: r.get("error") for r in records if r.get("status") != "ok"},
        "scores_sha256": hashlib.sha256(values.to_csv(index=False).encode()).hexdigest(),
        "score_means": values.groupby("metric")["value"].mean().to_dict(),
        # per-sample values, to compare runs that differ by rounding (batching, TF32) against the exact one
        "scores_by_sample": {m: dict(zip(df.sample_id, df.value)) for m, df in values.groupby("metric")},
    }
    print(json.dumps(payload, indent=1))
    print(f"wrote {write_result('end_to_end', payload, args.smoke, args.out)}")
    return payload


if __name__ == "__main__":
    main()
