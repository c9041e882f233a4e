"""`python -m harness.models list|fetch|lock|export`: see which real weights the configs load, download
them, lock their hashes, and write any model config as a diffusers directory.

    python -m harness.models list
    python -m harness.models fetch sd15 [--to DIR]
    python -m harness.models lock model=sd15 features=standard method=[regiondrag] [--lock FILE]
    python -m harness.models export tiny DIR

`lock` composes the run's config from the same overrides as `python -m harness` and records every
real-weights source that run loads (harness/models/weights.py). Errors print one line and exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.models.hub import WeightsNotFoundError


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def cmd_list(lock_file: str) -> None:
    """One row per model config and network setting: where it loads from, whether this machine has it,
    its size, and whether its files match the lock."""
    from harness.models import hub, sources, weights
    from harness.models.catalogue import entries
    from harness.report.leaderboard import markdown_table

    import pandas as pd

    lock = weights.Lock.read(lock_file)
    rows = []
    for entry in entries():
        row = {"name": entry.name, "setting": entry.setting}
        source = entry.source
        if source is None:
            rows.append(dict(row, **{"loads from": f"random weights ({entry.random})", "published as": "", "revision": "",
                                     "here": "built", "size": "", "lock": ""}))
            continue
        directory = hub.cached_dir(source)
        status = "no lock"
        if directory is None:
            here, size = "no", ""
            if lock is not None:
                status = "locked" if sources.lock_key(source) in lock.sources else "not locked"
        else:
            record = weights.entry(source, directory)
            here, size = ("directory" if source.is_local else "hf cache"), _size(record["bytes"])
            if lock is not None:
                locked = lock.sources.get(sources.lock_key(source))
                status = ("not locked" if locked is None else
                          "ok" if not weights.mismatches(source, record["files"], locked) else "DIFFERS")
        published = source.published_as or ""
        removed = " (removed)" if published in hub.REMOVED_REPOS else " (same id)" if published == source.location else ""
        rows.append(dict(row, **{"loads from": source.location, "published as": published + removed,
                                 "revision": source.revision or "main" if not source.is_local else "",
                                 "here": here, "size": size, "lock": status}))
    print(markdown_table(pd.DataFrame(rows)))
    print(f"\nlock: {lock.path if lock else f'{lock_file} (absent)'}; "
          "fetch with `python -m harness.models fetch NAME [--to DIR]`")


def cmd_fetch(name: str, to: str | None) -> None:
    from harness.models import hub
    from harness.models.catalogue import find

    entry = find(name)
    if entry.source is None:
        raise WeightsNotFoundError(f"{name}: a random-weight config has nothing to download "
                                   f"(python -m harness.models export {name} DIR writes it as a directory)")
    path = hub.fetch(entry.source, to)
    print(path)


def cmd_lock(overrides: list[str], lock_file: str) -> None:
    """Resolve (downloading unless offline) and hash every real-weights source of the composed run."""
    from harness.config import compose
    from harness.models import hub, sources, weights

    cfg = compose(overrides)
    found = sources.run_sources(cfg)
    lock = weights.Lock.read(lock_file) or weights.Lock(Path(lock_file))
    for source in found:
        directory = hub.resolve(source)
        lock.sources[sources.lock_key(source)] = record = weights.entry(source, directory)
        print(f"{source.describe()}: {len(record['files'])} files, {_size(record['bytes'])}, "
              f"revision {record['revision'] or '(local directory)'}")
    if not found:
        print("this run loads no real weights (random-weight model and feature networks); nothing to lock")
        return
    lock.write()
    print(f"wrote {lock.path}")


def cmd_export(name: str, directory: str) -> None:
    from harness.models.catalogue import model_configs
    from harness.models.export import export

    configs = model_configs()
    if name not in configs:
        import difflib

        close = difflib.get_close_matches(name, configs, n=3, cutoff=0.5)
        raise WeightsNotFoundError(f"unknown model config {name!r} (conf/model/{name}.yaml)"
                                   + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""))
    print(export(configs[name], directory))


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = argparse.ArgumentParser(prog="python -m harness.models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="every model and network config: source, presence, size, lock status")
    p.add_argument("--lock", default="weights.lock", help="lock file (default: weights.lock)")
    p = sub.add_parser("fetch", help="download the files the harness reads from a model or network")
    p.add_argument("name", help="model config (sd15) or network id as `list` shows it")
    p.add_argument("--to", default=None, help="a plain directory to download into (default: the Hugging Face cache)")
    p = sub.add_parser("lock", help="write the hashes of every weight file a run loads")
    p.add_argument("overrides", nargs="*", help="the run's config overrides, as for python -m harness")
    p.add_argument("--lock", default="weights.lock", help="lock file (default: weights.lock)")
    p = sub.add_parser("export", help="write a model config as a diffusers directory (save_pretrained)")
    p.add_argument("name", help="model config (tiny, tiny_sd21, random_sd15, sd15, ...)")
    p.add_argument("directory")
    args = parser.parse_args(argv)

    from harness.models.weights import WeightsError
    from harness.registry import UnknownNameError

    try:
        if args.command == "list":
            cmd_list(args.lock)
        elif args.command == "fetch":
            cmd_fetch(args.name, args.to)
        elif args.command == "lock":
            cmd_lock(args.overrides, args.lock)
        else:
            cmd_export(args.name, args.directory)
    except (WeightsNotFoundError, WeightsError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
