"""`python -m harness.judges gscore <out_dir> [judge=<name>] [judge.<field>=…] [--methods a,b] [--repeats 10]
[--seed 0] [--device auto]`: GoodDrag's GScore over the method variants of a finished run
(harness/judges/gscore.py). Judge overrides use the run config's syntax (conf/judge/); without `judge=`, the
run's own judge is used.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.judges", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gscore", help="GoodDrag's GScore over the methods of a run")
    g.add_argument("out_dir", help="a finished run's out_dir (holding run.json and store/)")
    g.add_argument("overrides", nargs="*", help="judge=<name> and judge.<field>=<value> overrides")
    g.add_argument("--methods", help="comma-separated method names or variant keys (default: all in the run)")
    g.add_argument("--repeats", type=int, default=10, help="repetitions per sample (GoodDrag: 10)")
    g.add_argument("--seed", type=int, default=0, help="seed of the per-repetition method order")
    g.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from harness.judges.gscore import GScoreError, compute
    from harness.pipeline import markdown_table
    from harness.registry import UnknownNameError

    try:
        judge_cfg = None
        bad = [o for o in args.overrides if not o.startswith("judge")]
        if bad:
            raise GScoreError(f"unknown argument(s) {bad}: only judge=<name> and judge.<field>=<value> overrides")
        if args.overrides:
            from harness.config import compose

            judge_cfg = compose(args.overrides).get("judge")
        run = compute(args.out_dir, judge_cfg, args.methods.split(",") if args.methods else None, args.repeats,
                      args.seed, args.device)
    except (GScoreError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(run.summary, ".2f"))
    print(f"judge calls: {run.judge.calls}, cached answers: {run.judge.cache_hits}; wrote {args.out_dir}/gscore.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
