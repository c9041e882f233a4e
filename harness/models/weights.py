"""The weights lock: which files a run loads, their SHA-256, and the check that they are the locked ones.

A benchmark number depends on which copy of the weights produced it, and hub copies change or vanish
(harness/models/hub.py). `python -m harness.models lock` writes `weights.lock` (YAML): per source (hub id,
or the absolute path of a local directory) the resolved revision and the SHA-256 of every file the harness
reads from it. A run then

- at start-up (`check_run`, called once by harness/cli.py before any work) hashes every real-weights source
  already on this machine and refuses — `WeightsError`, exit 2 — naming the config, the file and both
  hashes when one differs from the lock (`weights_lock: strict`, the default; `warn` only logs; `off`);
- at load time (`checked_dir`, used by every loader) checks again the sources it downloads only then;
- records the hashes in `run.json` (`weights`) and, for the feature networks, in every score entry's
  settings (`MetricContext.weights`).

Hashes are cached in `<editlab cache>/weights_sha256.json`, keyed on (path, size, mtime), so unchanged
multi-GB files are hashed once per machine, not once per run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from harness.models.hub import WeightsNotFoundError, WeightsSource, cached_dir, files, offline, resolve, snapshot_revision
from harness.models.sources import feature_sources, lock_key, run_sources
from harness.paths import cache_dir
from harness.store import atomic_write_json, file_sha256

log = logging.getLogger(__name__)

LOCK_VERSION = 1
MODES = ("strict", "warn", "off")
class WeightsError(ValueError):
    """The run's weights cannot be used: they differ from the lock, the lock cannot be read, or a config
    that names them is invalid."""


# ------------------------------------------------------------------------------------------ hashing

_HASH_LOCK = threading.Lock()
_HASHES: dict[str, list] | None = None


def _hash_cache_path() -> Path:
    return cache_dir() / "weights_sha256.json"


def sha256(path: Path) -> str:
    """SHA-256 of `path`, from the cache when its size and mtime are unchanged since it was last hashed."""
    global _HASHES
    path = Path(path).resolve()
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    with _HASH_LOCK:
        if _HASHES is None:
            try:
                _HASHES = json.loads(_hash_cache_path().read_text())
            except (OSError, ValueError):
                _HASHES = {}
        hit = _HASHES.get(key)
        if hit and hit[:2] == stamp:
            return hit[2]
    value = file_sha256(path)
    with _HASH_LOCK:
        _HASHES[key] = [*stamp, value]
        try:
            atomic_write_json(_hash_cache_path(), _HASHES)
        except OSError as exc:  # a read-only cache costs re-hashing, nothing else
            log.debug("cannot write the hash cache: %s", exc)
    return value


def digest(file_hashes: Mapping[str, str]) -> str:
    """One hash over a source's files (name and SHA-256 of each), for compact records."""
    payload = "\n".join(f"{name} {h}" for name, h in sorted(file_hashes.items()))
    return hashlib.sha256(payload.encode()).hexdigest()


# ------------------------------------------------------------------------------------------ records


def hash_dir(source: WeightsSource, directory: Path) -> dict[str, str]:
    return {name: sha256(directory / name) for name in files(source, directory)}


def entry(source: WeightsSource, directory: Path) -> dict[str, Any]:
    """A lock entry (also the run record) for `source` as found in `directory`."""
    hashes = hash_dir(source, directory)
    return {"config": source.config, "setting": source.setting, "source": source.location,
            "published_as": source.published_as, "revision": snapshot_revision(directory) or source.revision,
            "variant": source.variant, "bytes": sum((directory / n).stat().st_size for n in hashes),
            "files": hashes}


@dataclass
class Lock:
    path: Path
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> "Lock | None":
        import yaml

        path = Path(path)
        if not path.is_file():
            return None
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise WeightsError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("sources", {}), dict):
            raise WeightsError(f"{path}: expected a mapping with 'sources' (written by python -m harness.models lock)")
        return cls(path, dict(data.get("sources") or {}))

    def write(self) -> None:
        import yaml

        from harness.store import atomic_write_bytes

        text = ("# Written by `python -m harness.models lock`: the weight files runs load and their SHA-256.\n"
                "# Runs refuse weights that differ (weights_lock=strict|warn|off).\n")
        text += yaml.safe_dump({"version": LOCK_VERSION, "sources": self.sources}, sort_keys=True)
        atomic_write_bytes(self.path, text.encode())


def mismatches(source: WeightsSource, found: Mapping[str, str], locked: Mapping[str, Any]) -> list[str]:
    """One line per file whose hash differs from the lock, is missing, or is not in the lock."""
    locked_files = dict(locked.get("files") or {})
    lines = []
    for name in sorted(set(found) | set(locked_files)):
        want, got = locked_files.get(name), found.get(name)
        if want != got:
            lines.append(f"{source.setting} ({source.config}): {name}: locked sha256 {want or '(not in the lock)'}, "
                         f"found {got or '(missing)'}")
    return lines


# ---------------------------------------------------------------------------------------- the check


@dataclass
class Policy:
    mode: str = "off"
    lock: Lock | None = None


_POLICY = Policy()


def configure(mode: str, lock_file: str | Path) -> Policy:
    """Set the process's lock policy from the run config (`weights_lock`, `weights_lock_file`)."""
    global _POLICY
    if mode not in MODES:
        raise WeightsError(f"weights_lock={mode!r}: must be one of {', '.join(MODES)}")
    lock = Lock.read(lock_file) if mode != "off" else None
    _POLICY = Policy(mode, lock)
    return _POLICY


def verify(source: WeightsSource, directory: Path, policy: Policy | None = None) -> dict[str, Any]:
    """Hash `source`'s files in `directory` and compare them with the lock; returns the record entry."""
    policy = policy or _POLICY
    record = entry(source, directory)
    if policy.lock is None:
        return record
    locked = policy.lock.sources.get(lock_key(source))
    if locked is None:
        problems = [f"{source.setting} ({source.config}): {lock_key(source)} is not in {policy.lock.path}"]
    else:
        problems = mismatches(source, record["files"], locked)
    if problems:
        message = (f"weights differ from {policy.lock.path}:\n  " + "\n  ".join(problems) +
                   "\nIf the new weights are intended, run `python -m harness.models lock <the run's overrides>` again; "
                   "weights_lock=warn runs anyway.")
        if locked is not None and locked.get("revision") and not source.is_local:
            message += f" To load the locked copy, set its revision to {locked['revision']}."
        if policy.mode == "strict":
            raise WeightsError(message)
        log.warning("%s", message)
    return record


def checked_dir(source: WeightsSource, download: bool | None = None) -> Path:
    """The directory to load `source` from, verified against the lock in effect (loaders call this).
    `download=False` never asks the network; None: unless `HF_HUB_OFFLINE` is set."""
    directory = resolve(source, download=download)
    if _POLICY.lock is not None:
        verify(source, directory)
    return directory


def component_dir(spec: Any) -> Path:
    """The directory an add-on component's real build loads from (a `ComponentSpec`,
    harness/models/components.py), verified against the lock in effect."""
    source = spec.weights_source()
    if source is None:
        raise WeightsNotFoundError(f"component {spec.name!r}: field 'path' is required for real weights "
                                   f"(conf/component/{spec.name}.yaml)")
    return checked_dir(source)


def check_run(cfg: Mapping[str, Any], plans: Iterable[Any] | None = None) -> dict[str, Any]:
    """At start-up, before any work: configure the lock policy from the run config, hash every
    real-weights source already on this machine and refuse (strict) those that differ from the lock.
    Returns the run record (`run.json` `weights`): per setting, the files and hashes, or `not cached`."""
    policy = configure(str(cfg.get("weights_lock", "strict")), str(cfg.get("weights_lock_file", "weights.lock")))
    records: dict[str, Any] = {}
    try:
        sources = run_sources(cfg, plans)
    except ValueError as exc:  # a feature network's model config (ModelSpec) or a method name
        raise WeightsError(str(exc)) from exc
    for source in sources:
        try:
            directory = resolve(source, download=False)
        except WeightsNotFoundError:
            # a method's model that nothing later could obtain: say so now (feature networks the configured
            # metrics may not use are obtained, and checked, when first loaded)
            if source.setting == "model" or source.setting.endswith(".model"):
                if source.is_local or offline():
                    raise
            directory = None
        if directory is None or not files(source, directory):  # downloaded when first loaded, checked then
            records[source.setting] = {"config": source.config, "source": source.location, "status": "not cached"}
            continue
        records[source.setting] = verify(source, directory, policy)
    return records


def summary(records: Mapping[str, Any]) -> dict[str, str]:
    """Compact form for score settings: per setting, `source@revision sha256:<digest of its files>`."""
    out = {}
    for setting, rec in records.items():
        if "files" in rec:
            rev = f"@{rec['revision']}" if rec.get("revision") else ""
            out[setting] = f"{rec['source']}{rev} sha256:{digest(rec['files'])[:16]}"
    return out


def feature_weights(features: Mapping[str, Any]) -> dict[str, str]:
    """The compact weight record of the feature networks already on this machine (score settings;
    `FEATURE_USERS` selects each metric's share)."""
    records = {}
    for source in feature_sources(features):
        directory = cached_dir(source)
        if directory is not None:
            records[source.setting] = entry(source, directory)
    return summary(records)

