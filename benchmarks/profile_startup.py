"""Where a run's start-up goes before the first edit: imports, CUDA initialisation, random-weight builds.

    python benchmarks/profile_startup.py            # GPU: random_sd15 (editing) then random_sd21 (DIFT), fp16
    python benchmarks/profile_startup.py --smoke    # CPU: tiny models (tests the script)

The phases run in the order `python -m harness` meets them, in this fresh process, each timed on the wall
clock; the first model build also runs under cProfile, whose largest cumulative entries say what inside it
is slow (imports deferred by diffusers/transformers, weight initialisation, moving to the device). Run it
twice: the second run shows what was a one-off of the machine (bytecode compilation of freshly installed
packages, the OS page cache).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--top", type=int, default=25, help="cProfile entries kept for the first build")
    args = parser.parse_args(argv)
    phases: list[dict] = []

    def phase(name: str, fn=None):
        t0 = time.perf_counter()
        result = fn() if fn else None
        sync()
        phases.append({"phase": name, "s": time.perf_counter() - t0})
        print(phases[-1], flush=True)
        return result

    def sync() -> None:
        if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
            sys.modules["torch"].cuda.synchronize()

    phase("import torch", lambda: __import__("torch"))
    import torch

    phase("import hydra + harness.cli", lambda: (__import__("hydra"), __import__("harness.cli")))  # as cli.main does
    phase("import diffusers pipelines", lambda: __import__("diffusers").StableDiffusionPipeline)
    phase("import transformers CLIP", lambda: __import__("transformers").CLIPTextModel)
    cuda = torch.cuda.is_available() and not args.smoke
    phase("CUDA init (first tensor)", (lambda: torch.zeros(1, device="cuda")) if cuda else None)
    from harness.models import load_models

    size = {"dtype": "float16", "device": "cuda"} if cuda else {"device": "cpu"}
    edit_model = {"name": "random_sd15", "source": "random", "arch": "sd15" if cuda else "tiny", "seed": 0, **size}
    dift_model = {"name": "random_sd21", "source": "random", "arch": "sd21" if cuda else "tiny_sd21", "seed": 0, **size}
    profiler = cProfile.Profile()
    phase("first build (editing model)", lambda: profiler.runcall(load_models, edit_model))
    phase("second build (DIFT model)", lambda: load_models(dift_model))
    phase("third build (same architecture as the first, other seed)", lambda: load_models({**edit_model, "seed": 1}))
    from harness.metrics.features import build_lpips_alex

    phase("LPIPS AlexNet build", lambda: build_lpips_alex("random"))
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(args.top)
    profile = [line for line in stream.getvalue().splitlines() if line.strip()][-args.top - 1:]
    total = time.perf_counter() - T_START
    print("\n".join(profile))
    from benchmarks.common import print_table, write_result

    print_table(phases)
    print(f"total since interpreter start of this module: {total:.1f} s")
    payload = {"phases": phases, "total_s": total, "first_build_profile": profile}
    print(f"wrote {write_result('startup', payload, args.smoke, args.out)}")
    return payload


if __name__ == "__main__":
    main()
