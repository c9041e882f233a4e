"""Judge commands over a finished run (`out_dir` holding run.json and store/):

- `python -m harness.judges gscore <out_dir> [judge=<name>] [judge.<field>=…] [--methods a,b] [--repeats 10]
  [--seed 0]`: GoodDrag's GScore over the run's method variants (harness/judges/gscore.py);
- `python -m harness.judges prefill <out_dir> --metrics viescore_o@drag_v1[,…] [judge=…] [--chunk 256]`: ask
  the VIEScore requests of every stored output in large batches, so that scoring finds them cached
  (harness/judges/prefill.py).

Judge overrides use the run config's syntax (conf/judge/); without `judge=`, the run's own judge is used.
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
    f = sub.add_parser("prefill", help="ask a run's VIEScore judge requests in large batches")
    f.add_argument("out_dir")
    f.add_argument("overrides", nargs="*", help="judge=<name> and judge.<field>=<value> overrides")
    f.add_argument("--metrics", required=True, help="comma-separated VIEScore metric ids")
    f.add_argument("--chunk", type=int, default=256, help="requests gathered before each ask")
    f.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from harness.judges.gscore import GScoreError, compute
    from harness.report.leaderboard import markdown_table
    from harness.registry import UnknownNameError

    try:
        judge_cfg = None
        bad = [o for o in args.overrides if not o.startswith("judge")]
        if bad:
            raise GScoreError(f"unknown argument(s) {bad}: only judge=<name> and judge.<field>=<value> overrides")
        if args.overrides:
            from harness.config import compose

            judge_cfg = compose(args.overrides).get("judge")
        if args.command == "prefill":
            from harness.judges.prefill import prefill

            judge = prefill(args.out_dir, args.metrics.split(","), judge_cfg, args.chunk, args.device)
            print(f"judge calls: {judge.calls}, cached answers: {judge.cache_hits}")
            return 0
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
