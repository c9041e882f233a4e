"""Scale-out on one host: a DragBench-D-sized job on 1 GPU and on N GPUs (Hydra's joblib launcher, one shard
per GPU, then the merge run), wall clock, efficiency and score identity (issue #20, target 4).

    python benchmarks/bench_scaleout.py --gpus 4                    # 4 GPUs: 1-GPU run, 4-GPU run, merge
    python benchmarks/bench_scaleout.py --gpus 8 --methods dragdiffusion gooddrag
    python benchmarks/bench_scaleout.py --gpus 4 --launcher submitit_local
    python benchmarks/bench_scaleout.py --smoke                     # CPU: 4 tiny samples, 2 workers, identity

Per method: `python -m harness` on one GPU (edit, score, report), then
`python -m harness -m hydra/launcher=joblib_gpus hydra.launcher.n_jobs=N shard.count=N 'shard.index=range(N)'
'stages=[edit,score]'` and the merge run `'stages=[score,report]'` into another store. Efficiency =
t(1 GPU) / (N · t(N GPUs, merge included)); the scores of the two stores must be identical (`time` and
`peak_mem` are measurements and are left out). The dataset is bench_end_to_end.py's stand-in (53 heights).
"""
from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.bench_end_to_end import dragbench_heights, write_dataset  # noqa: E402
from benchmarks.common import benchmark_parser, write_result  # noqa: E402

METHODS = ("dragdiffusion", "dragnoise", "freedrag", "gooddrag", "sdedrag")
METRICS = "[lpips_alex@dragdiffusion,md_dift@dragdiffusion]"
LAUNCHERS = {"joblib": ["hydra/launcher=joblib_gpus", "hydra.launcher.n_jobs={n}"],
             "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.gpus_per_node={n}"]}


def harness(args: list[str]) -> float:
    import subprocess

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", *args], check=True, cwd=PROJECT_ROOT)
    return time.perf_counter() - t0


def scores_digest(out: Path) -> tuple[str, int]:
    values = pd.read_csv(out / "scores.csv")
    values = values[~values.metric.isin(["time", "peak_mem"])].sort_values(["method", "sample_id", "metric"])
    rows = values[["sample_id", "metric", "value"]].to_csv(index=False)
    return hashlib.sha256(rows.encode()).hexdigest(), len(values)


def one_method(method: str, base: list[str], gpus: int, launcher: str, tmp: Path) -> dict[str, Any]:
    single, multi = tmp / f"{method}-1", tmp / f"{method}-{gpus}"
    common = [*base, f"method={method}"]
    t1 = harness([*common, f"out_dir={single}"])
    launch = [arg.format(n=gpus) for arg in LAUNCHERS[launcher]]
    tn = harness(["-m", *launch, f"shard.count={gpus}", f"shard.index=range({gpus})", "stages=[edit,score]",
                  *common, f"out_dir={multi}"])
    merge = harness([*common, "stages=[score,report]", f"out_dir={multi}"])
    (d1, n1), (dn, nn) = scores_digest(single), scores_digest(multi)
    return {"one_gpu_s": t1, "sharded_s": tn, "merge_s": merge, "n_gpus": gpus,
            "efficiency": t1 / (gpus * (tn + merge)), "scores_identical": d1 == dn and n1 == nn, "score_rows": n1}


def main(argv: list[str] | None = None) -> Path:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--samples", type=int, default=205)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="joblib")
    args = parser.parse_args(argv)
    if args.smoke:
        n, width, heights, gpus, methods = 4, 64, [48, 64, 48, 40], 2, ["identity"]
        base = ["model=tiny", "features=smoke", "metrics=[lpips_alex@dragdiffusion]"]
    else:
        n, width, heights, gpus, methods = args.samples, 512, dragbench_heights(__import__("numpy").random.default_rng(0)), args.gpus, args.methods
        base = ["model=random_sd15", "features=random_sd21", f"metrics={METRICS}"]
    payload: dict[str, Any] = {"samples": n, "launcher": args.launcher, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "DragBench"
        write_dataset(data, n, width, heights)
        base = ["dataset=dragbench_d", f"dataset.root={data}", *base]
        for method in methods:
            payload["methods"][method] = one_method(method, base, gpus, args.launcher, Path(tmp))
            print(method, payload["methods"][method], flush=True)
            write_result("scaleout", payload, args.smoke, args.out)
    return write_result("scaleout", payload, args.smoke, args.out)


if __name__ == "__main__":
    main()
