"""Reading scores out of a judge's raw answer. Our rules, stated here; a score that cannot be read is
*undefined* (with the reason and the raw text kept by the caller), never 0 and never guessed.

VIEScore answers (`parse_scores`):
1. Every top-level JSON object in the answer is decoded (`json.JSONDecoder.raw_decode` at each `{` outside an
   object already decoded, so text inside a JSON string — an echoed caption, say — is never read as a
   second object). Objects with a `score` key are the candidates.
2. With no candidate, a `"score": [...]` fragment of otherwise broken JSON counts (the common failure: a
   trailing comma); failing that, an answer that is nothing but a list of numbers or a single number counts
   (as VIEScore's `mllm_output_to_dict` accepts `[6, 0]` or `7`).
3. Candidates that disagree make the answer undefined (`ambiguous`): which one the judge meant cannot be
   known, e.g. when it repeats a score injected through a caption and then gives its own.
4. The score must be a list of exactly `count` numbers (a bare number counts as a list of one), each within
   [low, high]; booleans and numeric strings are not numbers. A score of 11 on a 0–10 scale is undefined.

Differences from VIEScore's parser: it guesses a random score when it finds none (`give_up_parsing`) and
re-asks the model once first; it takes the minimum of whatever list it gets, whatever its length, and it
does not check the range. We do none of these: each would put a number in the table that the judge did not
give.

GScore answers (`parse_ratings`): the candidates are the top-level JSON objects whose keys are exactly the
labels shown (`{"A": 7, "B": 4}`); exactly one distinct candidate must exist; every rating must be a number
within [1, 10].
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

_SCORE_FRAGMENT = re.compile(r'"score"\s*:\s*(\[[^\[\]{}]*\]|-?\d+(?:\.\d+)?)')
_BARE = re.compile(r"^\s*(\[\s*-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?)*\s*\]|-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Parsed:
    """`values` when the answer holds one valid score, else None and `reason` says why (undefined)."""

    values: tuple[float, ...] | None
    reason: str = ""
    source: str = ""  # json | fragment | bare

    @property
    def ok(self) -> bool:
        return self.values is not None


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object in `text`, in order (objects nested in decoded ones are not repeated)."""
    decoder, found, i = json.JSONDecoder(), [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return found
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = end


def _numbers(value: Any) -> list[float] | None:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in items):
        return None
    return [float(v) for v in items]


def _check(values: list[float] | None, count: int, low: float, high: float, source: str) -> Parsed:
    if values is None:
        return Parsed(None, "score entries are not all numbers", source)
    if len(values) != count:
        return Parsed(None, f"expected {count} score(s), got {len(values)}", source)
    outside = [v for v in values if not low <= v <= high]
    if outside:
        return Parsed(None, f"score(s) {outside} outside [{low:g}, {high:g}]", source)
    return Parsed(tuple(values), "", source)


def _distinct(candidates: list[Any]) -> list[Any]:
    out: list[Any] = []
    for c in candidates:
        if c not in out:
            out.append(c)
    return out


def parse_scores(text: str, count: int, low: float = 0, high: float = 10) -> Parsed:
    """The VIEScore `score` list of a raw answer (rules in the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        return Parsed(None, "empty answer")
    candidates = _distinct([obj["score"] for obj in json_objects(text) if "score" in obj])
    source = "json"
    if not candidates:
        candidates = _distinct([json.loads(m.group(1)) for m in _SCORE_FRAGMENT.finditer(text)])
        source = "fragment"
    if not candidates:
        bare = _BARE.match(text)
        if bare:
            candidates, source = [json.loads(bare.group(1))], "bare"
    if not candidates:
        return Parsed(None, "no score found (no JSON object with a 'score' key, no bare list of numbers)")
    if len(candidates) > 1:
        return Parsed(None, f"ambiguous: {len(candidates)} different scores in one answer ({candidates[:3]})", source)
    return _check(_numbers(candidates[0]), count, low, high, source)


def parse_ratings(text: str, labels: list[str], low: float = 1, high: float = 10) -> tuple[dict[str, float] | None, str]:
    """GScore ratings by label, or (None, reason)."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty answer"
    wanted = set(labels)
    candidates = _distinct([obj for obj in json_objects(text) if set(obj) == wanted])
    if not candidates:
        return None, f"no JSON object with exactly the labels {sorted(wanted)}"
    if len(candidates) > 1:
        return None, f"ambiguous: {len(candidates)} different rating objects in one answer"
    ratings = {}
    for label in labels:
        values = _numbers(candidates[0][label])
        if values is None or len(values) != 1:
            return None, f"rating of {label} is not a number: {candidates[0][label]!r}"
        if not low <= values[0] <= high:
            return None, f"rating of {label} ({values[0]:g}) outside [{low:g}, {high:g}]"
        ratings[label] = values[0]
    return ratings, ""
