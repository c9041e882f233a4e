"""Before/after check of a refactoring: every output PNG and every score must stay bit-identical.

Runs `python -m harness` (a fresh process per case, as a user would) over:

- the demo (`python -m harness`: identity, copy_paste, regiondrag on the embedded demo, tiny model);
- a DragBench-D subset from ../shared/data/dragbench-d (`--drag-samples`, 3 by default) with every
  registered drag method on the tiny model, each with explicit small step overrides so that the run is
  affordable on two CPU cores (a 512² DragBench image costs minutes per method there even so), scored with
  the DragDiffusion-protocol metrics (the demo covers the others);
- the prompt editors (p2p, pnp, masactrl, pix2pix_zero) on a 1-sample PIE-Bench fixture tree
  (tests/dataset_fixtures.py; PIE-Bench masks are 512²) with the smoke PIE metrics;
- the exemplar methods (paint_by_example, sd_inpaint) on a 3-sample COCOEE fixture tree with fid@pbe and
  clip_region@pbe.

The digest holds, per case, the SHA-256 of every PNG under the run's store and the sorted rows of its
`scores.csv`, with the values of the metrics that measure the edit itself (wall clock, peak memory: they
change from run to run by nature) replaced by their status. `--compare` exits 1 on any difference. A case
whose folder under `--work` already holds a finished run (scores.csv) is digested as it is, so an
interrupted check resumes.

    python -m benchmarks.check_identical --work /tmp/ident-before --write benchmarks/results/identical_before.json
    python -m benchmarks.check_identical --work /tmp/ident-after --compare benchmarks/results/identical_before.json
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DRAGBENCH_D = REPO.parent / "shared" / "data" / "dragbench-d"
DRAG_IDS = ["art_work/PJC_2023-09-15-1549-43", "animals/JH_2023-09-14-1825-41",
            "building_city_view/YAN_2023-09-14-1738-42"]  # the smallest first
# Metrics whose value is a measurement of the edit (wall clock, memory): compared by status only.
MEASURED = {"time", "time_total_s", "time_edit_s", "time_lora_s", "peak_mem"}

_DDIM = ["lora_steps=1", "lora_resolution=64", "lora_batch_size=1", "steps=2"]


def _method(name: str, fields: list[str]) -> list[str]:
    return [f"method.{name}.{field}" for field in fields]


DRAG_METHODS = {
    "identity": [], "copy_paste": [], "regiondrag": _method("regiondrag", ["steps=2"]),
    "dragdiffusion": _method("dragdiffusion", [*_DDIM, "n_pix_step=1"]),
    "dragnoise": _method("dragnoise", [*_DDIM, "n_pix_step=1"]),
    "freedrag": _method("freedrag", [*_DDIM, "max_step=1"]),
    "gooddrag": _method("gooddrag", [*_DDIM, "drag_end_step=1", "track_per_step=1", "max_drag_per_track=1"]),
    "sdedrag": _method("sdedrag", ["lora_steps=1", "steps=10", "t0=0.2"]),
}
PROMPT_METHODS = {
    "p2p": _method("p2p", ["inversion=ddim", "steps=2"]),
    "pnp": _method("pnp", ["steps=2"]),
    "masactrl": _method("masactrl", ["steps=2"]),
    "pix2pix_zero": _method("pix2pix_zero", ["steps=2", "captioner=random_tiny", "regularisation_steps=1"]),
}


def cases(work: Path, dragbench_d: Path, drag_samples: int) -> dict[str, list[str]]:
    """Case name → the `python -m harness` overrides (out_dir added by the caller)."""
    from tests.dataset_fixtures import encode_rle, pie_entry, pie_object_mask, write_cocoee, write_pie_bench

    entry = pie_entry("0_random_140/000000000000.jpg", "0", encode_rle(pie_object_mask()))
    pie_root = write_pie_bench(work / "fixtures" / "pie", {"000000000000": entry})
    cocoee_root = write_cocoee(work / "fixtures" / "cocoee", ids=(1773, 3419, 900100376112))
    out: dict[str, list[str]] = {"demo": []}
    out["dragbench_d"] = ["dataset=dragbench_d", f"dataset.root={dragbench_d.resolve()}",
                          f"dataset.ids=[{','.join(DRAG_IDS[:drag_samples])}]", f"method=[{','.join(DRAG_METHODS)}]",
                          "metrics=[lpips_alex@dragdiffusion,md_dift@dragdiffusion,time]",
                          *[o for overrides in DRAG_METHODS.values() for o in overrides]]
    out["pie_bench"] = ["experiment=pie_bench", "model=tiny", "features=smoke", f"dataset.root={pie_root}",
                        f"method=[{','.join(PROMPT_METHODS)}]",
                        *[o for overrides in PROMPT_METHODS.values() for o in overrides]]
    out["cocoee"] = ["dataset=cocoee", f"dataset.root={cocoee_root}", "metric_set=exemplar",
                     "method=[identity,paint_by_example,sd_inpaint]", "features=smoke", "metric_device=cpu",
                     "model@method.paint_by_example.model=tiny_pbe", "model@method.sd_inpaint.model=tiny_inpaint",
                     "method.paint_by_example.steps=2", "method.paint_by_example.resolution=64",
                     "method.sd_inpaint.steps=2", "method.sd_inpaint.resolution=64"]
    return out


def digest(run_dir: Path) -> dict[str, Any]:
    pngs = {p.relative_to(run_dir / "store").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "store").rglob("*.png"))}
    rows = []
    with open(run_dir / "scores.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["metric"] in MEASURED:
                row["value"] = f"<measured:{row['status']}>"
            rows.append(json.dumps(row, sort_keys=True))
    return {"pngs": pngs, "scores_csv": sorted(rows)}


def run_case(name: str, overrides: list[str], work: Path) -> dict[str, Any]:
    out_dir = work / name
    if (out_dir / "scores.csv").is_file():
        print(f"[{name}] digesting the finished run in {out_dir}", flush=True)
        return digest(out_dir)
    command = [sys.executable, "-m", "harness", *overrides, f"out_dir={out_dir}", "reporting.html=false",
               "reporting.bootstrap=50"]
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    env = dict(os.environ, EDITLAB_CACHE=str(work / "cache"))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"[{name}] failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    print(f"[{name}] {time.perf_counter() - start:.0f} s", flush=True)
    return digest(out_dir)


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    problems = []
    for case, old in before["cases"].items():
        new = after["cases"].get(case)
        if new is None:
            problems.append(f"{case}: not run")
            continue
        for path in sorted(set(old["pngs"]) | set(new["pngs"])):
            if old["pngs"].get(path) != new["pngs"].get(path):
                problems.append(f"{case}: PNG {path}: {old['pngs'].get(path)} → {new['pngs'].get(path)}")
        if old["scores_csv"] != new["scores_csv"]:
            gone = sorted(set(old["scores_csv"]) - set(new["scores_csv"]))
            added = sorted(set(new["scores_csv"]) - set(old["scores_csv"]))
            problems += [f"{case}: scores.csv row only before: {r}" for r in gone[:10]]
            problems += [f"{case}: scores.csv row only after: {r}" for r in added[:10]]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the runs (reused)")
    parser.add_argument("--write", type=Path, help="write the digest JSON here")
    parser.add_argument("--compare", type=Path, help="compare with this digest JSON; exit 1 on any difference")
    parser.add_argument("--cases", nargs="*", help="run only these cases")
    parser.add_argument("--dragbench-d", type=Path, default=DRAGBENCH_D, help="the DragBench-D subset's root")
    parser.add_argument("--drag-samples", type=int, default=3, help="DragBench-D samples (1 to 3)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    unfinished = [p.parent.name for p in work.glob("*/store") if not (p.parent / "scores.csv").is_file()]
    if unfinished:
        raise SystemExit(f"{work}: unfinished runs {unfinished} (their stored samples would be reused); remove them")
    work.mkdir(parents=True, exist_ok=True)
    selected = {k: v for k, v in cases(work, args.dragbench_d, args.drag_samples).items()
                if not args.cases or k in args.cases}
    result = {"cases": {name: run_case(name, overrides, work) for name, overrides in selected.items()},
              "commands": selected}
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"digest: {args.write}")
    if args.compare:
        before = json.loads(args.compare.read_text())
        if args.cases:
            before["cases"] = {k: v for k, v in before["cases"].items() if k in args.cases}
        problems = compare(before, result)
        for problem in problems:
            print(problem)
        n_png = sum(len(c["pngs"]) for c in result["cases"].values())
        n_rows = sum(len(c["scores_csv"]) for c in result["cases"].values())
        print("IDENTICAL" if not problems else f"{len(problems)} DIFFERENCES",
              f"({n_png} PNGs, {n_rows} score rows over {len(result['cases'])} cases)")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
