"""Loading the auxiliary transformers networks: one grammar for the settings that name them, one place for
their errors.

The CLIP networks are CLIP ViT-B/32 (`clip_vit.py`: Paint-by-Example's FID/CLIP/QS metrics, the vision tower
with its projection, `CLIPVisionModelWithProjection`) and CLIP ViT-L/14 (`pie_networks.py`: PIE-Bench's
CLIP scores, the full `CLIPModel` with tokenizer and image processor); DINO ViT-B/8 (`pie_networks.py`) is
loaded the same way, and so are the prompt editors' helpers: StyleDiffusion's CLIP ViT-B/16 image encoder
(`harness/prompt/image_tokens.py`, `method.p2p.style_image_encoder`) and Pix2Pix-Zero's BLIP captioner
(`harness/prompt/captioner.py`, `method.pix2pix_zero.captioner`). All come through transformers, and
each setting takes:

- a hub id (`openai/clip-vit-base-patch32`, or `openai/clip-vit-base-patch32@<commit>` to pin a revision):
  its safetensors snapshot, which needs network access once or a copy in the Hugging Face cache
  (`HF_HUB_OFFLINE=1` uses the cache without asking the network; harness/models/hub.py);
- a local directory holding the checkpoint;
- `random`: the exact published architecture with seeded random weights (GPU timing, smoke runs);
- `random_tiny`: the same structure with tiny widths (CPU tests).

`load_network` is that grammar once: it builds the random variants under a seed without disturbing the
global RNG, and loads the rest, turning a missing directory or an unreachable hub into a
`NetworkWeightsError` that names the setting and the ways to fix it. What stays with each network is what
differs between them: the model class, the architecture table, the seed and the identity string that
results record (unchanged, so stored results stay comparable).
"""
from __future__ import annotations

from typing import Callable, TypeVar

from harness.determinism import seeded_global_rng

T = TypeVar("T")
RANDOM_SPECS = ("random", "random_tiny")


class NetworkWeightsError(OSError):
    """A network's weights cannot be obtained; the message names the config setting to change."""


def seeded(seed: int, build: Callable[[], T]) -> T:
    """`build()` under `torch.manual_seed(seed)`; the caller's RNG state is restored afterwards."""
    with seeded_global_rng(seed):
        return build()


def from_pretrained(load: Callable[[str], T], spec: str, setting: str) -> T:
    """`load(directory)` for a hub id (`owner/name`, or `owner/name@revision` to pin a commit) or a local
    directory (`~` expanded). The directory comes from `weights.checked_dir`: the local one, or the hub
    snapshot of only the files the harness reads, verified against the weights lock when one is in effect.
    Failures name the config `setting` that chose it (`features.clip_vit_b32`, `method.pix2pix_zero.captioner`)."""
    from harness.models.hub import WeightsNotFoundError
    from harness.models.sources import network_source
    from harness.models.weights import checked_dir

    choices = (f"set {setting} to a hub id (network access once, then the Hugging Face cache), a local "
               f"directory holding the checkpoint, or {' / '.join(RANDOM_SPECS)} for a smoke run without weights")
    try:
        directory = checked_dir(network_source(spec, setting, "transformers"))
    except WeightsNotFoundError as exc:
        raise NetworkWeightsError(f"{exc}; {choices}") from exc
    try:
        return load(str(directory))
    except OSError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NetworkWeightsError(f"{setting}={spec!r}: cannot load the weights ({reason}); {choices}") from exc


def load_network(spec: str, setting: str, random: Callable[[str], T], pretrained: Callable[[str], T], seed: int) -> T:
    """`random(spec)` built under `seed` when `spec` is `random` or `random_tiny`, else `pretrained(source)`
    through `from_pretrained`."""
    if spec in RANDOM_SPECS:
        return seeded(seed, lambda: random(spec))
    return from_pretrained(pretrained, spec, setting)
