"""VIEScore (Ku et al., ACL 2024; TIGER-AI-Lab/VIEScore @2cbea4e) with a pinned, cached judge
(harness/judges): `viescore_{sc,pq,o}@<family>_v1` for prompt (`edit_v1`), drag (`drag_v1`) and exemplar
(`exemplar_v1`) editing.

Per draw, as the reference's `VIEScore.evaluate` computes it: the judge answers the SC prompt (template
`viescore_sc_<family>_v1`, images and instruction from harness/judges/inputs.py) and the PQ prompt
(`viescore_pq_v1`, the edited image alone) with two sub-scores each on 0–10; SC = min(SC sub-scores),
PQ = min(PQ sub-scores), O = √(SC·PQ) (the minimum is taken before the root). With `judge.repeats = n` the
metric's value is the mean over the n draws whose answers parse, and the record keeps every draw (raw
answer, parsed sub-scores, whether it came from the cache) with the standard deviation (n−1 in the
denominator). An answer that does not parse (harness/judges/parse.py) leaves its draw undefined; a sample
with no parsed draw is undefined (NaN, with the reason and the raw answers), never 0.

Difference from the reference: it re-asks once and then guesses a random score when it cannot parse; we
record undefined. The judge's identity, template ids and hashes, decoding and repeats are in the settings
stored with every value; the run's `judge` config is part of the score cache key (harness/scoring.py).
"""
from __future__ import annotations

import math
import statistics
from typing import Any, ClassVar, Mapping

import numpy as np

from harness.judges import Judge, JudgeRequest, build_judge, decoding, repeats
from harness.judges.inputs import sc_inputs
from harness.judges.parse import parse_scores
from harness.judges.templates import load_template
from harness.metrics.base import Metric, MetricValue
from harness.registry import METRICS
from harness.store import stable_hash
from harness.types import Sample

FAMILIES = {"prompt": "edit", "drag": "drag", "exemplar": "exemplar"}
PQ_TEMPLATE = "viescore_pq_v1"
SUB_SCORES = 2  # [success, over-editing] for SC, [naturalness, artifacts] for PQ


def judge_for(context: Any) -> tuple[Judge, dict[str, Any]]:
    """The run's judge (built once per metric context) and its config."""
    cfg = context.features.get("judge")
    if not cfg:
        raise ValueError("no judge configured: add judge=<name> (conf/judge/: qwen25vl_7b, qwen25vl_72b_served, random_tiny)")
    return context.shared(("judge", stable_hash(cfg)), lambda: build_judge(cfg, context.device)), cfg


def _draw(text: str, cached: bool, key: str) -> tuple[float | None, dict[str, Any]]:
    parsed = parse_scores(text, SUB_SCORES)
    info = {"raw": text, "cached": cached, "key": key[:16], "scores": list(parsed.values) if parsed.ok else None}
    if not parsed.ok:
        info["undefined"] = parsed.reason
    return (min(parsed.values) if parsed.ok else None), info


class VieScore(Metric):
    quantity: ClassVar[str] = "o"  # sc | pq | o
    family_template: ClassVar[str] = "edit"
    higher_is_better = True

    def requests(self, sample: Sample, edited: np.ndarray, cfg: Mapping[str, Any]) -> dict[str, list[JudgeRequest]]:
        """The judge requests of one sample by part (`sc`, `pq`), `repeats` each; ValueError when the sample
        lacks what the SC prompt needs. `python -m harness.judges prefill` asks the same requests in batches."""
        parts: dict[str, list[JudgeRequest]] = {}
        n, dec = repeats(cfg), decoding(cfg)

        def ask(template_id: str, images: list[np.ndarray], fields: Mapping[str, str]) -> list[JudgeRequest]:
            template = load_template(template_id)
            text = template.render(**fields)
            return [JudgeRequest(template.id, template.sha256, text, tuple(images), dec, r) for r in range(n)]

        if self.quantity in ("sc", "o"):
            images, fields = sc_inputs(sample, edited)
            parts["sc"] = ask(f"viescore_sc_{self.family_template}_v1", images, fields)
        if self.quantity in ("pq", "o"):
            parts["pq"] = ask(PQ_TEMPLATE, [edited], {})
        return parts

    def compute(self, sample: Sample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        judge, cfg = judge_for(self.context)
        n, _ = repeats(cfg), decoding(cfg)  # config errors surface here, not as undefined values
        try:
            parts = self.requests(sample, edited, cfg)
        except ValueError as exc:
            return MetricValue(float("nan"), info={"nan": str(exc)})
        flat = [r for requests in parts.values() for r in requests]
        replies = iter(judge.ask(flat))
        answers = {part: [next(replies) for _ in requests] for part, requests in parts.items()}
        draws, values = [], []
        for r in range(n):
            draw: dict[str, Any] = {"repetition": r}
            subs = {}
            for part, part_replies in answers.items():
                subs[part], draw[part] = _draw(part_replies[r].text, part_replies[r].cached, part_replies[r].key)
            value = None
            if all(v is not None for v in subs.values()):
                value = math.sqrt(subs["sc"] * subs["pq"]) if self.quantity == "o" else subs[self.quantity]
                values.append(value)
            draw["value"] = value
            draws.append(draw)
        info: dict[str, Any] = {"judge": judge.name, "draws": draws, "n_draws": n, "n_parsed": len(values),
                                "cached": all(d[p]["cached"] for d in draws for p in answers)}
        if not values:
            reasons = sorted({d[p]["undefined"] for d in draws for p in answers if "undefined" in d[p]})
            return MetricValue(float("nan"), info={"nan": "judge answer unparseable: " + "; ".join(reasons), **info})
        info["std"] = statistics.stdev(values) if len(values) > 1 else None
        return MetricValue(float(statistics.fmean(values)), info=info)

    def settings(self) -> dict[str, Any]:
        judge, cfg = judge_for(self.context)
        templates = ([f"viescore_sc_{self.family_template}_v1"] if self.quantity != "pq" else []) + (
            [PQ_TEMPLATE] if self.quantity != "sc" else [])
        return {"model": str(judge.identity.get("model")), "judge": judge.identity,
                "templates": {t: load_template(t).sha256[:16] for t in templates},
                "decoding": decoding(cfg).as_dict(), "repeats": repeats(cfg),
                "aggregation": {"sc": "min over SC sub-scores", "pq": "min over PQ sub-scores",
                                "o": "sqrt(min SC sub-scores × min PQ sub-scores)"}[self.quantity]
                + "; per draw, mean over parsed draws",
                "scale": "0-10"}


for _family, _name in FAMILIES.items():
    for _quantity in ("sc", "pq", "o"):
        _id = f"viescore_{_quantity}@{_name}_v1"
        METRICS.register(_id)(type(_id, (VieScore,), {"id": _id, "quantity": _quantity, "family_template": _name,
                                                      "families": (_family,)}))
