"""Prompt-to-Prompt attention control (Hertz et al. 2022), as PnPInversion runs it on PIE-Bench.

Controls act on the text-conditioned half of the guided batch only (rows c_src, c_tgt; the unconditional
rows are left alone), with branch 0 = source and branch 1 = target:

- **cross-attention** for denoising steps i < int(cross_replace·(steps+1)) — the reference builds its
  per-step weights over steps+1 entries, so 0.4 of 50 steps gives 20 steps:
  `refine` (the target's maps take the source's maps through a token alignment of the two prompts;
  inserted tokens keep their own maps) or `replace` (same word count; maps moved word for word);
  then the **equalizer** multiplies the target's maps of the reweighted tokens (×2 on the target blend
  word in the PIE-Bench scripts). After those steps the target's cross-attention is its own.
- **self-attention** for steps i < int(self_replace·steps) (30 of 50) in transformer blocks 2–12: the
  target's self-attention maps become the source's. The reference selects layers with ≤ 32² query tokens,
  which at 512×512 are exactly these blocks; the block rule keeps small test images on the same layers.
- **LocalBlend**: the cross-attention maps of the blend words (source word in branch 0, target word in
  branch 1), summed over steps so far and averaged over the five transformer blocks at 1/4 of the latent
  size (blocks 4, 5, 7, 8, 9 — the reference's 16×16 layers at 512²), max-pooled 3×3, nearest-upsampled
  to the latent, divided by their maximum and thresholded at 0.3; the union of both branches' masks keeps
  the target, the rest is copied from the source. From step int(0.2·steps) on.

The maps LocalBlend reads are taken after the edits above, as in the reference (its store holds views
that the edit then overwrites).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.diffusion.attention_control import AttentionController

MAX_TOKENS = 77
SELF_REPLACE_BLOCKS = frozenset(range(2, 13))
BLEND_BLOCKS = frozenset({4, 5, 7, 8, 9})


def word_token_indices(prompt: str, word: str | int, tokenizer) -> list[int]:
    """Token positions (1-based, after the start token) of every occurrence of a space-separated word.

    Like the reference `get_word_inds`: `word` is matched against `prompt.split(" ")` exactly (or is a word
    position), and tokens are assigned to words by accumulating their decoded lengths.
    """
    words = prompt.split(" ")
    places = {i for i, w in enumerate(words) if w == word} if isinstance(word, str) else {word}
    if not places:
        return []
    pieces = [tokenizer.decode([t]).strip("#") for t in tokenizer.encode(prompt)][1:-1]
    out, length, ptr = [], 0, 0
    for i, piece in enumerate(pieces):
        if ptr >= len(words):
            break
        length += len(piece)
        if ptr in places:
            out.append(i + 1)
        if length >= len(words[ptr]):
            ptr, length = ptr + 1, 0
    return out


def _global_alignment(x: list[int], y: list[int]) -> list[int]:
    """For every token of y, the index of the aligned token of x, or −1 (inserted).

    Needleman–Wunsch with gap 0, match +1, mismatch −1; ties prefer a gap in x, then a gap in y, then the
    diagonal (the reference's traceback order), which decides the alignment of repeated tokens.
    """
    n, m = len(x), len(y)
    score = np.zeros((n + 1, m + 1), dtype=np.int64)
    move = np.zeros((n + 1, m + 1), dtype=np.int8)  # 1 = from the left (y only), 2 = from above (x only), 3 = diagonal
    move[0, 1:], move[1:, 0] = 1, 2
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left, up = score[i, j - 1], score[i - 1, j]
            diag = score[i - 1, j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            best = max(left, up, diag)
            score[i, j] = best
            move[i, j] = 1 if best == left else 2 if best == up else 3
    mapping: list[int] = []
    i, j = n, m
    while i > 0 or j > 0:
        if move[i, j] == 3:
            i, j = i - 1, j - 1
            mapping.append(i)
        elif move[i, j] == 1:
            j -= 1
            mapping.append(-1)
        else:
            i -= 1
    return mapping[::-1]


def refinement_mapper(source: str, target: str, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper, alphas) over 77 positions: target token j reads source token mapper[j] where alphas[j] = 1.

    Positions after the target's end token map to themselves (padding to padding)."""
    x = tokenizer.encode(source)[:MAX_TOKENS]
    y = tokenizer.encode(target)[:MAX_TOKENS]
    aligned = torch.tensor(_global_alignment(x, y), dtype=torch.int64)
    mapper = torch.cat([aligned, len(y) + torch.arange(MAX_TOKENS - len(y))])
    alphas = torch.ones(MAX_TOKENS)
    alphas[: len(y)] = (aligned != -1).float()
    return mapper, alphas


def replacement_mapper(source: str, target: str, tokenizer) -> torch.Tensor:
    """77×77 map from source to target tokens for prompts with the same word count (reference
    `get_replacement_mapper_`, including its quirks: same-length word pairs map token i to token i,
    longer ones spread evenly; after the last changed word the map is the identity by target position)."""
    words_x, words_y = source.split(" "), target.split(" ")
    if len(words_x) != len(words_y):
        raise ValueError(f"p2p: controller=replace needs prompts with the same number of words; source has "
                         f"{len(words_x)}, target {len(words_y)} (use controller=refine)")
    changed = [i for i in range(len(words_y)) if words_y[i] != words_x[i]]
    src_tokens = [word_token_indices(source, i, tokenizer) for i in changed]
    tgt_tokens = [word_token_indices(target, i, tokenizer) for i in changed]
    mapper = np.zeros((MAX_TOKENS, MAX_TOKENS))
    i = j = k = 0
    while i < MAX_TOKENS and j < MAX_TOKENS:
        if k < len(src_tokens) and src_tokens[k] and src_tokens[k][0] == i:
            s, t = src_tokens[k], tgt_tokens[k]
            if len(s) == len(t):
                mapper[s, t] = 1
            else:
                for col in t:
                    mapper[s, col] = 1 / len(t)
            k, i, j = k + 1, i + len(s), j + len(t)
        elif k < len(src_tokens):
            mapper[i, j] = 1
            i, j = i + 1, j + 1
        else:
            mapper[j, j] = 1
            i, j = i + 1, j + 1
    return torch.from_numpy(mapper).float()


def token_weights(prompt: str, word: str, value: float, tokenizer, default: float = 1.0) -> torch.Tensor:
    """77 × `default` with `value` at the tokens of `word`: the equalizer (1, ×2 on the word) and the
    LocalBlend word selector (0, 1 on the word)."""
    weights = torch.full((MAX_TOKENS,), default)
    weights[word_token_indices(prompt, word, tokenizer)] = value
    return weights


def _half(n: int) -> int:
    """Size after one UNet downsampling (stride-2 conv, padding 1)."""
    return (n + 1) // 2


class LocalBlend:
    def __init__(self, word_selectors: torch.Tensor, latent_hw: tuple[int, int], start_step: int,
                 threshold: float = 0.3) -> None:
        self.selectors = word_selectors  # (branches, 77): 1 at the blend word's tokens of each branch
        self.latent_hw = latent_hw
        self.start_step, self.threshold = start_step, threshold
        self.maps: dict[int, torch.Tensor] = {}  # block → cond-half cross-attention summed over steps

    def store(self, block: int, probs: torch.Tensor) -> None:
        self.maps[block] = self.maps[block] + probs if block in self.maps else probs.clone()

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if step < self.start_step:
            return x
        h, w = (_half(_half(n)) for n in self.latent_hw)
        maps = torch.cat([self.maps[b] for b in sorted(self.maps)], dim=1)  # (branches, blocks·heads, h·w, 77)
        weights = self.selectors.to(maps.device, maps.dtype)[:, None, None, :]
        maps = (maps * weights).sum(-1).mean(1).reshape(-1, 1, h, w)
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=tuple(self.latent_hw))
        maps = maps / maps.amax(dim=(2, 3), keepdim=True)
        mask = maps > self.threshold
        mask = (mask[:1] | mask).to(x.dtype)
        return x[:1] + mask * (x - x[:1])


class P2PController(AttentionController):
    """Prompt-to-Prompt on two branches [source, target] in a guided batch [u_s, u_t, c_s, c_t]."""

    def __init__(self, cross_steps: int, self_steps: int, refine: tuple[torch.Tensor, torch.Tensor] | None = None,
                 replace: torch.Tensor | None = None, equalizer: torch.Tensor | None = None,
                 local_blend: LocalBlend | None = None) -> None:
        if (refine is None) == (replace is None):
            raise ValueError("P2PController needs exactly one of refine=(mapper, alphas) or replace=matrix")
        self.cross_steps, self.self_steps = cross_steps, self_steps
        self.refine, self.replace, self.equalizer, self.local_blend = refine, replace, equalizer, local_blend

    def needs_probs(self, block: int, is_cross: bool) -> bool:
        if is_cross:
            return self.step < self.cross_steps or (self.local_blend is not None and block in BLEND_BLOCKS)
        return self.step < self.self_steps and block in SELF_REPLACE_BLOCKS

    def _cross(self, base: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """Target cross-attention from the source's (`base`: heads×N×77) and its own (`own`)."""
        if self.refine is not None:
            mapper, alphas = (t.to(base.device) for t in self.refine)
            alphas = alphas.to(base.dtype)
            new = base[:, :, mapper] * alphas + own * (1 - alphas)
        else:
            new = torch.einsum("hpw,wn->hpn", base, self.replace.to(base.device, base.dtype))
        if self.equalizer is not None:
            new = new * self.equalizer.to(base.device, base.dtype)
        return new

    def edit_probs(self, block: int, is_cross: bool, probs: torch.Tensor) -> torch.Tensor:
        source, target = 2, 3  # rows of the text-conditioned half
        if is_cross:
            if self.step < self.cross_steps:
                probs[target] = self._cross(probs[source], probs[target])
            if self.local_blend is not None and block in BLEND_BLOCKS:
                self.local_blend.store(block, probs[source:])
        else:
            probs[target] = probs[source]
        return probs

    def step_callback(self, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.local_blend is None else self.local_blend(latents, self.step)
