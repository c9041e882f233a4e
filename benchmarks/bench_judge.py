"""Judge throughput: the Qwen2.5-VL-7B architecture with full-size random weights, built on the GPU in bf16,
through the local backend's real path (processor, batched greedy `generate`, decoding) on a VIEScore drag
sample: the SC prompt (template viescore_sc_drag_v1: 2 images at 512², the drag drawn on the first) and the
PQ prompt (viescore_pq_v1: 1 image), each answered with exactly `--new-tokens` tokens (EOS suppressed by
`min_new_tokens`, since random weights would stop anywhere).

Throughput is reported per request and per VIEScore sample (= one SC + one PQ request, as the O metric
asks; sequential batches of SC then PQ). Random weights change no shape and no FLOP, so the time is the
trained model's for the same token counts, except that a trained judge stops at its own EOS.

    python benchmarks/bench_judge.py [--batch-sizes 1,8,32,64] [--new-tokens 100] [--smoke]

`--smoke` runs the tiny random judge on the CPU (tests).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import matmul_tflops, print_table, sync, write_result  # noqa: E402


def sample_requests(batch: int, new_tokens: int, size: int) -> tuple[list, list]:
    from harness.judges import Decoding, JudgeRequest
    from harness.judges.inputs import draw_drag, drag_instruction
    from harness.judges.templates import load_template

    rng = np.random.default_rng(0)
    decoding = Decoding(max_new_tokens=new_tokens)
    sc_t, pq_t = load_template("viescore_sc_drag_v1"), load_template("viescore_pq_v1")
    sc, pq = [], []
    for i in range(batch):  # distinct images per sample: no cache, no repeated input
        source = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        edited = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        drawn = draw_drag(source, np.array([[100.0, 120.0]]), np.array([[180.0, 140.0]]))
        text = sc_t.render(instruction=drag_instruction("a photo of a cat sitting on a sofa"))
        sc.append(JudgeRequest(sc_t.id, sc_t.sha256, text, (drawn, edited), decoding, i))
        pq.append(JudgeRequest(pq_t.id, pq_t.sha256, pq_t.render(), (edited,), decoding, i))
    return sc, pq


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--judge-path", type=int, default=0, metavar="N",
                        help="also time the Judge path (cache writes included) on N samples: one sample per call, as "
                             "the score stage asks, and all N at once in batches of --judge-batch, as prefill asks")
    parser.add_argument("--judge-batch", type=int, default=64)
    parser.add_argument("--out")
    args = parser.parse_args()

    from harness.judges import random_judge
    from harness.judges.local import LocalBackend

    arch, device = ("random_tiny", "cpu") if args.smoke else ("random_7b", "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    t0 = time.perf_counter()
    model, processor = random_judge.build(arch, seed=0, device=device, dtype=dtype)
    model.generation_config.min_new_tokens = args.new_tokens  # exactly --new-tokens per answer
    sync()
    build_s = time.perf_counter() - t0
    pixels = random_judge.TINY_PIXELS if args.smoke else {}
    backend = LocalBackend(arch, device=device, loader=lambda: (model, processor),
                           identity_name=random_judge.identity_name(arch, 0), pixels=pixels)
    params = sum(p.numel() for p in model.parameters())
    rows, results = [], []
    for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
        try:
            result = measure(backend, batch, args)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            results.append({"batch": batch, "error": "out of memory"})
            print(f"batch {batch}: out of memory")
            continue
        results.append(result)
        rows.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items() if k != "timings"})
        print_table(rows[-1:])
    payload = {"benchmark": "judge", "arch": arch, "parameters": params, "dtype": str(dtype), "build_s": build_s,
               "image_size": args.size, "templates": ["viescore_sc_drag_v1", "viescore_pq_v1"],
               "bf16_matmul_tflops": None if args.smoke else matmul_tflops(torch.bfloat16), "results": results}
    if args.judge_path:
        payload["judge_path"] = judge_path(backend, args)
        print_table([{k: v for k, v in r.items()} for r in payload["judge_path"]])
    path = write_result("judge", payload, args.smoke, args.out)
    print_table(rows)
    print(f"wrote {path}")


def judge_path(backend, args: argparse.Namespace) -> list[dict]:
    """Samples/s through `Judge.ask` (keys, cache reads and writes included) with an empty cache: per sample
    ([SC, PQ] in one call, the score stage's O metric) and all at once (prefill, `--judge-batch` per generate)."""
    import tempfile

    from harness.judges import Judge

    n = args.judge_path
    out = []
    for mode in ("per_sample", "prefill"):
        sc, pq = sample_requests(n + 1, args.new_tokens, args.size)
        with tempfile.TemporaryDirectory() as cache:
            judge = Judge(backend, "bench", cache_dir=Path(cache), batch_size=args.judge_batch)
            judge.ask([sc[n], pq[n]])  # warm-up outside the timing (its own images)
            sync()
            t = time.perf_counter()
            if mode == "per_sample":
                for i in range(n):
                    judge.ask([sc[i], pq[i]])
            else:
                judge.ask(sc[:n] + pq[:n])
            sync()
            seconds = time.perf_counter() - t
        out.append({"mode": mode, "samples": n, "batch_size": 2 if mode == "per_sample" else args.judge_batch,
                    "seconds": seconds, "samples_per_s": n / seconds, "s_per_1000_samples": 1000 * seconds / n})
    return out


def measure(backend, batch: int, args: argparse.Namespace) -> dict:
    """Median seconds of one SC batch and one PQ batch of `batch` requests (after a warm-up request)."""
    sc, pq = sample_requests(batch, args.new_tokens, args.size)
    backend.generate(sc[:1], [0])  # warm-up (kernels, allocator)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    timings: dict[str, list[float]] = {"sc": [], "pq": []}
    meta = {}
    for _ in range(args.repeat):
        for name, requests in (("sc", sc), ("pq", pq)):
            sync()
            t = time.perf_counter()
            out = backend.generate(requests, [0] * len(requests))
            sync()
            timings[name].append(time.perf_counter() - t)
            meta[name] = out[0][1]
    sc_s, pq_s = float(np.median(timings["sc"])), float(np.median(timings["pq"]))
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else 0.0
    return {"batch": batch, "sc_batch_s": sc_s, "pq_batch_s": pq_s, "sc_requests_per_s": batch / sc_s,
            "pq_requests_per_s": batch / pq_s, "samples_per_s": batch / (sc_s + pq_s),
            "s_per_1000_samples": 1000 * (sc_s + pq_s) / batch, "sc_prompt_tokens": meta["sc"]["prompt_tokens"],
            "pq_prompt_tokens": meta["pq"]["prompt_tokens"], "new_tokens": meta["sc"]["new_tokens"],
            "peak_gib": peak, "timings": timings}


if __name__ == "__main__":
    main()
