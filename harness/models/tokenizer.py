"""The OpenAI CLIP BPE tokenizer, built offline from the vocabulary that open-clip-torch ships.

Random-weight models need a tokenizer whose ids equal the real SD tokenizers' ids, and no hub is
reachable; open-clip-torch carries the BPE merges (`bpe_simple_vocab_16e6.txt.gz`). We turn them into the
`vocab.json` + `merges.txt` pair that `transformers.CLIPTokenizer` reads (algorithm in models.md §3).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

from harness.paths import cache_dir

N_MERGES = 49152 - 256 - 2


def _bpe_vocab_path() -> Path:
    # find_spec locates the package without importing it (importing open_clip pulls in torchvision).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is not installed; it ships the CLIP BPE vocabulary")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise RuntimeError(f"CLIP BPE vocabulary not found at {path}")
    return path


def _byte_to_unicode() -> list[str]:
    """GPT-2/CLIP byte table, in table order: printable bytes first, then the rest from U+0100."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_vocab_files(directory: Path) -> tuple[Path, Path]:
    """Write `vocab.json` and `merges.txt` into `directory` (atomically) and return their paths."""
    lines = gzip.open(_bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]
    byte_chars = _byte_to_unicode()
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split(" ")) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    for path, text in (
        (vocab_path, json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False)),
        (merges_path, "#version: 0.2\n" + "\n".join(merges) + "\n"),
    ):
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return vocab_path, merges_path


@lru_cache(maxsize=None)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A `CLIPTokenizer` with the real CLIP ids; `pad_token="!"` gives the SD 2.x padding (id 0)."""
    from transformers import CLIPTokenizer

    directory = cache_dir() / "clip_bpe"
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    if not (vocab_path.is_file() and merges_path.is_file()):
        write_vocab_files(directory)
    return CLIPTokenizer(str(vocab_path), str(merges_path), model_max_length=77, pad_token=pad_token)
