"""`python -m harness.report`: reports from run stores, never running a method or a metric.

- `python -m harness.report <spec.yaml>... --store <out_dir> [--out DIR]`: render report specs (paper vs
  ours) as `<spec stem>.md`, `.tex`, `.csv` and `.html` into `--out` (default `<store>/reports/`).
- `python -m harness.report results --store <out_dir>`: (re)write the run's `results.json`.
- `python -m harness.report leaderboard <results.json or out_dir>... --out DIR [--allow-smoke]`: merge many
  runs' results into one static leaderboard site (`DIR/index.html`, works from file://).
- `python -m harness.report validate <submission dir>`: check a submission (schema, hashes, metric ids).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report.render import FORMATS
from harness.stats import RESAMPLES

COMMANDS = ("results", "leaderboard", "validate")


def render_specs(argv: list[str]) -> int:
    from harness.report.collect import load_any
    from harness.report.render import write_all
    from harness.report.spec import SpecError, load_spec
    from harness.report.table import AmbiguousRowError, build_table

    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0],
                                     epilog="other commands: " + ", ".join(COMMANDS) + " (python -m harness.report <command> -h)")
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


def results_command(argv: list[str]) -> int:
    from harness.report.results import write_results

    parser = argparse.ArgumentParser(prog="python -m harness.report results",
                                     description="(Re)write <out_dir>/results.json from the run store.")
    parser.add_argument("--store", required=True, type=Path, help="a run's out_dir (holding store/ and run.json)")
    parser.add_argument("--resamples", type=int, default=None,
                        help="bootstrap resamples per cell (default: what the run used, reporting.bootstrap)")
    parser.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: the run's reporting.ci_seed)")
    args = parser.parse_args(argv)
    try:
        resamples, seed = _run_bootstrap(args.store)
        path = write_results(args.store, resamples=args.resamples if args.resamples is not None else resamples,
                             seed=args.seed if args.seed is not None else seed)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"results: {path}")
    return 0


def _run_bootstrap(out_dir: Path) -> tuple[int, int]:
    """The run's own bootstrap settings (run.json config `reporting`), so a regenerated file matches."""
    import json

    try:
        reporting = (json.loads((out_dir / "run.json").read_text()).get("config") or {}).get("reporting") or {}
    except (OSError, ValueError):
        reporting = {}
    return int(reporting.get("bootstrap", RESAMPLES)), int(reporting.get("ci_seed", 0))


def leaderboard_command(argv: list[str]) -> int:
    from harness.paths import PROJECT_ROOT
    from harness.report.merge import MergeError, load_sources, load_specs, merge
    from harness.report.results import ResultsError
    from harness.report.site import write_site
    from harness.report.spec import SpecError

    parser = argparse.ArgumentParser(prog="python -m harness.report leaderboard",
                                     description="Merge results files of many runs into one static leaderboard site.")
    parser.add_argument("results", nargs="+", type=Path, help="results.json files, or run out_dirs holding one")
    parser.add_argument("--out", required=True, type=Path, help="site folder to write (index.html, leaderboard.json, runs/)")
    parser.add_argument("--allow-smoke", action="store_true", help="accept smoke runs (random-weight networks); marked SMOKE")
    parser.add_argument("--specs", nargs="*", type=Path, default=None,
                        help="report specs whose published values are shown beside ours (default: reports/*.yaml)")
    parser.add_argument("--title", default="editlab leaderboard")
    args = parser.parse_args(argv)
    specs = args.specs if args.specs is not None else sorted((PROJECT_ROOT / "reports").glob("*.yaml"))
    try:
        sources = load_sources(args.results, allow_smoke=args.allow_smoke)
        board = merge(sources, load_specs(specs))
        index = write_site(board, sources, args.out, args.title)
    except (MergeError, ResultsError, SpecError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = sum(len(t["rows"]) for t in board.tables)
    print(f"{len(sources)} run(s), {len(board.tables)} table(s), {rows} row(s), {len(board.conflicts)} conflict(s)")
    for conflict in board.conflicts:
        print(f"conflict: {conflict}")
    print(f"site: {index}")
    return 0


def validate_command(argv: list[str]) -> int:
    from harness.report.validate import validate_submission

    parser = argparse.ArgumentParser(prog="python -m harness.report validate",
                                     description="Check a leaderboard submission folder (results.json + run.json [+ store/]).")
    parser.add_argument("submission", type=Path, help="the submission folder")
    args = parser.parse_args(argv)
    problems, checked = validate_submission(args.submission)
    for line in checked:
        print(f"ok: {line}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{args.submission}: {len(problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{args.submission}: valid submission")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"results": results_command, "leaderboard": leaderboard_command, "validate": validate_command}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return render_specs(argv)


if __name__ == "__main__":
    sys.exit(main())
