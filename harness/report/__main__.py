"""`python -m harness.report <spec.yaml> --store <out_dir> [--out DIR]`: render a report spec from a store.

Reads the store's per-sample records and cached scores (or a `scores.csv`); never runs a method or a
metric. Writes `<spec stem>.md`, `.tex`, `.csv` and `.html` into `--out` (default `<store>/reports/`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report.collect import load_any
from harness.report.render import FORMATS, write_all
from harness.report.spec import SpecError, load_spec
from harness.report.table import AmbiguousRowError, build_table
from harness.stats import RESAMPLES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="+", type=Path, help="report spec(s), e.g. reports/regiondrag_table1.yaml")
    parser.add_argument("--store", required=True, type=Path, help="a run's out_dir (holding store/), or a scores.csv")
    parser.add_argument("--out", type=Path, help="output folder (default: <store>/reports)")
    parser.add_argument("--model", help="keep only variants whose model identity contains this (overrides the spec's)")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples per cell")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (mixed with each cell's name)")
    args = parser.parse_args(argv)

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    bad = sorted(set(formats) - set(FORMATS))
    if bad:
        parser.error(f"unknown format(s) {bad}; valid: {','.join(FORMATS)}")
    try:
        store = load_any(args.store)
        out = args.out or (args.store if args.store.is_dir() else args.store.parent) / "reports"
        for spec_path in args.spec:
            table = build_table(load_spec(spec_path), store, model=args.model, resamples=args.resamples, seed=args.seed)
            for message in table.unmatched:  # an empty paper-table row must say why, not only look empty
                print(f"note: {spec_path.name}: {message}", file=sys.stderr)
            for fmt, path in write_all(table, out, formats).items():
                print(f"{fmt}: {path}")
    except (SpecError, AmbiguousRowError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
