"""`python -m harness.data describe --dataset NAME [--root PATH] [--verify] [key=value ...]`

Prints one JSON object: `samples`, `pairs` (drag handle→target pairs), `categories` (name → count),
`image_sizes` ("WxH" → count), `points_per_sample`, `dense_pairs` (with regions), … The dataset's config
`conf/dataset/<name>.yaml` supplies defaults; `key=value` pairs override its options (e.g.
`regions=from_points`, `categories=[animals]`, `point_fraction=0.25`). Invalid samples are listed on stderr
and the exit status is 1 (2 for a bad command line). `--verify` also decodes every image (finds truncated files; slower).
`python -m harness.data list` prints the dataset names.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from harness.data.base import DataError


class UsageError(Exception):
    """A bad command line (exit status 2; invalid data exits with 1)."""


def dataset_config(name: str, root: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    """`conf/dataset/<name>.yaml` as a run composes it (with the shared options of its defaults list), when
    there is one, with `root` and `key=value` overrides applied."""
    import yaml

    from harness.config import compose, group_options

    cfg: dict[str, Any] = compose([f"dataset={name}"])["dataset"] if name in group_options("dataset") else {}
    cfg["name"] = name
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        cfg[key.removeprefix("dataset.")] = yaml.safe_load(value)
    if root is not None:
        cfg["root"] = root
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="validate a dataset and print its statistics as JSON")
    d.add_argument("--dataset", required=True, help="dataset name (python -m harness.data list)")
    d.add_argument("--root", help="dataset root (default: the config's root)")
    d.add_argument("--verify", action="store_true", help="decode every image too (finds truncated files)")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="dataset options")
    sub.add_parser("list", help="print the registered dataset names")
    args = parser.parse_args(argv)

    from harness.registry import DATASETS, UnknownNameError

    if args.command == "list":
        print("\n".join(DATASETS.names()))
        return 0

    from harness.data.base import open_dataset
    from harness.data.describe import describe

    try:
        dataset = open_dataset(dataset_config(args.dataset, args.root, args.overrides))
        stats, errors = describe(dataset, verify=args.verify)
    except (UsageError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if errors:
        print(f"error: {len(errors)} of {len(errors) + stats['samples']} samples are invalid", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
