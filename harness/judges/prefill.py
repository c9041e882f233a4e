"""Ask a run's VIEScore judge requests in large batches, ahead of the score stage.

The score stage scores one sample at a time, so a judge sees one sample's prompts per call (the O metric's
SC and PQ together): on one H100 that is about 0.3 samples/s for Qwen2.5-VL-7B, against 4.8 at 64 requests
per call (README "Judges"). `python -m harness.judges prefill <out_dir> --metrics viescore_o@drag_v1`
builds exactly the requests the metrics would send for every stored output of the run (the metric's own
`requests`), drops duplicates (SC, PQ and O share prompts), and asks them `--chunk` at a time; the judge
batches them by `judge.batch_size` (local) or sends `judge.concurrency` at once (served). Every answer lands
in the judge cache, where the score stage then finds it: scoring afterwards makes no judge call. Batched
greedy decoding may differ from one-at-a-time decoding in rare near-tie tokens; whichever ran first is the
cached, recorded answer.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from harness.judges import Judge, JudgeRequest, build_judge
from harness.store import decode_png, iter_method_stores

log = logging.getLogger("harness")


def prefill(out_dir: Path, metric_ids: list[str], judge_cfg: Mapping[str, Any] | None = None, chunk: int = 256,
            device: str = "auto") -> Judge:
    import torch

    from harness.data.base import open_dataset
    from harness.judges.gscore import GScoreError, run_config_and_judge
    from harness.metrics.base import MetricContext
    from harness.metrics.viescore import VieScore
    from harness.registry import METRICS

    cfg, judge_cfg = run_config_and_judge(out_dir, judge_cfg, "prefill asks the judge about the outputs of a run")
    dataset = open_dataset(cfg["dataset"])
    classes = [METRICS.get(m) for m in metric_ids]
    wrong = [c.id for c in classes if not issubclass(c, VieScore) or dataset.family not in c.families]
    if wrong:
        raise GScoreError(f"prefill covers the VIEScore metrics of the run's family ({dataset.family}); not {wrong}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    judge = build_judge(judge_cfg, dev)
    metrics = [cls(MetricContext({"judge": judge_cfg}, device="cpu")) for cls in classes]
    pending: dict[str, JudgeRequest] = {}
    for store in iter_method_stores(Path(out_dir)):
        if store.dataset != dataset.key:
            continue
        for sample_id in dataset.sample_ids():
            record = store.load_record(sample_id)
            png = store.verified_png(sample_id, record) if record else None
            if png is None:
                continue
            sample, edited = dataset.load(sample_id), decode_png(png)
            for metric in metrics:
                try:
                    parts = metric.requests(sample, edited, judge_cfg)
                except ValueError:
                    continue  # undefined for this sample: the metric records why
                pending.update((judge.key(r), r) for requests in parts.values() for r in requests)
            if len(pending) >= chunk:
                judge.ask(list(pending.values()))
                pending.clear()
    if pending:
        judge.ask(list(pending.values()))
    return judge
