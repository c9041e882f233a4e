"""Settings that make runs bit-reproducible, and a record of which were in effect.

On the CPU the harness is deterministic as it stands: the same config, seed, library versions and thread
count give byte-identical PNGs and identical scores (tested) for forward-only methods; methods that take
gradient steps are bit-identical with one thread (multi-threaded convolution backward passes may sum in
another order). On a GPU, cuDNN autotuning, atomics in some
kernels and cuBLAS's workspace reuse make results vary between runs; `deterministic: true` switches on:

- `torch.use_deterministic_algorithms(True)`: deterministic kernels, and an error (recorded per sample)
  for an operation that has none;
- `CUBLAS_WORKSPACE_CONFIG=:4096:8`: required by cuBLAS for reproducible matmuls; it must be set before
  the first CUDA call of the process, which `python -m harness` guarantees by configuring first;
- `torch.backends.cudnn.deterministic = True` and `cudnn.benchmark = False`;
- (in effect, not a setting) the drag methods' CUDA graphs off (`graphed_grad.training_graphs`) and their
  bilinear resize and `grid_sample` on a backward of their own (`harness/diffusion/deterministic_grad.py`):
  PyTorch has no deterministic CUDA backward for either. Verified on an H100: identical PNGs from two processes
  for RegionDrag and the five LoRA drag methods (benchmarks/NOTES.md, session 8).

Even then bit-identity holds only on the same GPU model with the same driver and library versions.
Deterministic kernels can be slower, so timing runs should leave the option off and say so.

Two process-wide kernel choices change rounding, so a run that departs from their defaults gets its own
store keys for outputs and scores (`kernel_choices`; a default run's keys are unchanged), and every record
lists them (`state()`):
- `cudnn_attention` (default false): whether PyTorch may run scaled-dot-product attention through cuDNN. On
  an H100 cuDNN attention is ~3% faster per call in steady state, but it builds a plan for every new shape
  (0.6–0.7 s for the first call, benchmarks/NOTES.md) and adds host time to each eager call; DragBench-D
  alone has 53 image sizes. Without it PyTorch takes FlashAttention or memory-efficient attention.
- `tf32_matmul` (default false, as in PyTorch): float32 matrix products on TF32 tensor cores (10-bit
  mantissa, float32 accumulation). cuDNN convolutions already use TF32 by PyTorch's default, in the
  reference code too; this extends it to linear layers and attention, which makes the float32 protocol of
  `md_dift@dragdiffusion` 1.5× faster and moves its per-sample MD by ~1/1000 of what a different seed does
  (benchmarks/NOTES.md). Half-precision work (every fp16 method here) is unaffected.
The cuDNN determinism flags change no result on a deterministic run and are only recorded.

torch's global random generators are process-wide, not per thread. Every piece of code that seeds them
(random-weight builds, peft's LoRA initialisation) does so through `seeded_global_rng`, which holds
`GLOBAL_RNG_LOCK` and restores the generators afterwards; the edit stage holds the same lock around each
edit. Scoring concurrently with editing (harness/concurrent_scoring.py) thus never draws a random-weight
network from an edit's random stream, nor moves that stream under an edit.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator, Mapping

GLOBAL_RNG_LOCK = threading.RLock()

CUBLAS_WORKSPACE = ":4096:8"


def configure(deterministic: bool) -> dict[str, Any]:
    """Switch the settings on when `deterministic`; return what is in effect either way (for run.json)."""
    import torch

    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return dict(requested=bool(deterministic), **state())


KERNEL_DEFAULTS = {"cudnn_attention": False, "tf32_matmul": False}


def kernel_choices(cfg: Mapping[str, Any]) -> dict[str, bool]:
    """The run config's kernel choices that differ from `KERNEL_DEFAULTS` (see the module docstring): part of
    the store keys of outputs and scores, empty for a default run."""
    chosen = {name: bool(cfg.get(name, default)) for name, default in KERNEL_DEFAULTS.items()}
    return {name: value for name, value in chosen.items() if value != KERNEL_DEFAULTS[name]}


def configure_kernels(cfg: Mapping[str, Any]) -> None:
    """Apply the config's kernel choices to this process (see the module docstring)."""
    import torch

    torch.backends.cuda.enable_cudnn_sdp(bool(cfg.get("cudnn_attention", KERNEL_DEFAULTS["cudnn_attention"])))
    torch.backends.cuda.matmul.allow_tf32 = bool(cfg.get("tf32_matmul", KERNEL_DEFAULTS["tf32_matmul"]))


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """torch's global generators seeded with `seed` for the block, as they were afterwards (CPU, and every
    GPU once CUDA is initialised), with `GLOBAL_RNG_LOCK` held (see the module docstring)."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def state() -> dict[str, Any]:
    """The determinism-relevant settings of this process as they are now."""
    import torch

    return {
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_attention": bool(torch.backends.cuda.cudnn_sdp_enabled()),
        "cpu_threads": torch.get_num_threads(),
    }
