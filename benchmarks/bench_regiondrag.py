"""RegionDrag edit time at 512×512 with full-size random SD 1.5 weights, next to a plain diffusers 20-step
generation timed in the same process, the FLOP floor, and (optionally) the reference implementation.

    python benchmarks/bench_regiondrag.py                       # GPU: random_sd15, fp16, 512×512
    python benchmarks/bench_regiondrag.py --reference .ref      # also run Visual-AI/RegionDrag's drag()
    python benchmarks/bench_regiondrag.py --smoke               # CPU: tiny model, 64×64 (tests the script)
    python benchmarks/bench_regiondrag.py --batch-sizes 2,4,8   # also batched edits (method.regiondrag.batch_size)

`--reference DIR` points at a checkout of Visual-AI/RegionDrag (its `region_utils/` folder; never
committed here). Its `drag()` runs on the same random pipeline and seed; the InstantDrag import block is
stripped, and its `load_model` returns our models with our IP-Adapter Plus (the component that
`method.regiondrag.ip_adapter=plus` loads: the same random weights) attached to the UNet, as its
`pipe.load_ip_adapter` would; `--ip-adapter off` disables it on both sides.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import benchmark_parser, harness_runtime, matmul_tflops, print_table, sync, time_fn, write_result  # noqa: E402
from harness.models import load_models  # noqa: E402
from harness.regions import regions_to_dense_points  # noqa: E402
from harness.types import DragSample, RegionPair  # noqa: E402
from methods.regiondrag import RegionDrag  # noqa: E402


def synthetic_sample(size: int) -> DragSample:
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:size, 0:size] / size
    image = np.stack([xs, ys, 0.5 + 0.5 * np.sin(6 * xs * ys)], -1) + rng.normal(0, 0.03, (size, size, 3))
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    s = size / 512
    quad = np.array([[128, 160], [256, 160], [256, 320], [128, 320]], float) * s
    region = RegionPair("polygon", quad, quad + np.array([96, -32]) * s)
    dh, dt = regions_to_dense_points([region])
    return DragSample("bench/synthetic/0", image, "a photo of a painting", [[192 * s, 240 * s]],
                      [[288 * s, 208 * s]], np.ones((size, size), bool), regions=(region,), dense_handles=dh,
                      dense_targets=dt)


def batched_edits(models, sample: DragSample, batch_sizes: list[int], repeat: int) -> list[dict]:
    """Per-sample time of `edit_batch` on B different images of one size, and each output's max |Δ| against
    the same image edited alone (batching changes rounding only)."""
    import dataclasses

    single = RegionDrag.build({"ip_adapter": "off"})  # batched edits are measured without IP-Adapter
    single.setup(models)
    out = []
    for size in batch_sizes:
        samples = [dataclasses.replace(sample, sample_id=f"bench/synthetic/{i}",
                                       image=np.ascontiguousarray(np.roll(sample.image, 7 * i, axis=(0, 1))))
                   for i in range(size)]
        method = RegionDrag.build({"batch_size": size, "ip_adapter": "off"})
        method.setup(models)
        timing = time_fn(lambda: method.edit_batch(samples, 42), warmup=1, repeat=max(2, repeat // 2))
        together = method.edit_batch(samples, 42)
        diffs = [np.abs(r.image.astype(int) - single.edit(s, 42).image.astype(int)) for r, s in zip(together, samples)]
        out.append({"batch_size": size, "batch_s": timing["median_s"], "per_sample_s": timing["median_s"] / size,
                    "max_abs_diff_vs_alone": int(max(d.max() for d in diffs)),
                    "mean_abs_diff_vs_alone": float(np.mean([d.mean() for d in diffs])),
                    "identical_fraction": float(np.mean([(d == 0).mean() for d in diffs]))})
    return out


def load_reference(ref_dir: Path, models, ip=None):
    """Import RegionDrag's `region_utils.drag` without InstantDrag and with our random models; `ip`: our
    IP-Adapter (its image encoder and preprocessing go to the reference; attach it around `run_reference`)."""
    from diffusers import DPMSolverMultistepScheduler

    sys.path.insert(0, str(ref_dir))
    import region_utils.cycle_sde as cycle_sde

    if not torch.cuda.is_available():
        import functools

        cycle_sde.get_img_latent = functools.partial(cycle_sde.get_img_latent, torch_device="cpu", dtype=models.dtype)
        cycle_sde.get_text_embed = functools.partial(cycle_sde.get_text_embed, torch_device="cpu")

    source = (ref_dir / "region_utils" / "drag.py").read_text()
    start = source.index("# --- To include: InstantDrag")
    end = source.index('snapshot_download("alex4727/InstantDrag"')
    end = source.index("\n", end) + 1
    source = source[:start] + source[end:]
    if not torch.cuda.is_available():  # --smoke on a CPU: the reference hard-codes 'cuda'
        source = source.replace("device = 'cuda'", "device = 'cpu'")
    module = types.ModuleType("region_utils.drag")
    module.__package__ = "region_utils"
    exec(compile(source, str(ref_dir / "region_utils" / "drag.py"), "exec"), module.__dict__)
    pipe = models.pipe
    if not hasattr(pipe.vae.config, "_name_or_path"):  # set by from_pretrained; the reference reads it
        pipe.vae.register_to_config(_name_or_path="random")
    scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    module.load_model = lambda *a, **k: (pipe.vae, pipe.tokenizer, pipe.text_encoder, pipe.unet, scheduler,
                                         ip and ip.feature_extractor, ip and ip.image_encoder, None, None)
    if ip is None:
        module.ip_encode_image = lambda *a, **k: []  # no IP-Adapter: the UNet ignores an empty image_embeds list
    cycle_sde.load_model = module.load_model
    return module


def run_reference(module, sample: DragSample, seed: int) -> np.ndarray:
    data = {"ori_image": np.array(sample.image), "preview": np.array(sample.image), "prompt": sample.prompt,
            "mask": sample.editing_mask.astype(np.uint8), "source": sample.dense_handles.astype(np.int64),
            "target": sample.dense_targets.astype(np.int64)}
    return module.drag(data, 20, 0.5, 0.2, 1.0, seed, progress=lambda x: x, method="Encode then CP")


def breakdown(models, method: RegionDrag, sample: DragSample) -> dict[str, float]:
    """Median seconds of the edit's parts: VAE encode/decode and one UNet call (eager and replayed)."""
    from harness.diffusion.latents import decode_to_uint8, encode

    g = torch.Generator(models.device).manual_seed(0)
    latent = encode(models.vae, sample.image, g, models.dtype)
    text = models.encode_prompt(sample.prompt)
    t = torch.tensor(500, device=models.device)
    parts = {"vae_encode": lambda: encode(models.vae, sample.image, g, models.dtype),
             "vae_decode": lambda: decode_to_uint8(models.vae, latent),
             "unet_call_eager": lambda: models.unet(latent, t, encoder_hidden_states=text)}
    if models.device.type == "cuda":
        _, capture, _ = method._unet_runners(latent, (text,), int(method.config.start_t * method.config.steps))
        parts["unet_call_graph"] = lambda: capture(latent, t, text)
    with torch.no_grad():
        return {name: time_fn(fn, warmup=2, repeat=10)["median_s"] for name, fn in parts.items()}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def main() -> None:
    parser = benchmark_parser(__doc__, "tiny model on the CPU at 64×64", "result JSON (default: benchmarks/results/regiondrag[-tags]-<device>.json)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--channels-last", action="store_true", help="NHWC UNet/VAE (model.channels_last)")
    parser.add_argument("--reference", type=Path, default=None, help="checkout of Visual-AI/RegionDrag")
    parser.add_argument("--ip-adapter", default="plus", choices=["plus", "off"], help="method.regiondrag.ip_adapter")
    parser.add_argument("--cudnn-attention", action="store_true", help="allow cuDNN SDPA (the harness's cudnn_attention=true)")
    parser.add_argument("--batch-sizes", default="", help="e.g. 2,4,8: per-sample time of batched edits "
                        "(method.regiondrag.batch_size) and their max |Δ| against one-at-a-time edits")
    args = parser.parse_args()
    harness_runtime(args.cudnn_attention)
    size = 64 if args.smoke else args.size
    model_cfg = ({"name": "tiny", "source": "random", "arch": "tiny", "device": "cpu"} if args.smoke else
                 {"name": "random_sd15", "source": "random", "arch": "sd15", "dtype": "float16", "device": "cuda",
                  "channels_last": args.channels_last})
    repeat = 2 if args.smoke else args.repeat
    models = load_models(model_cfg)
    sample = synthetic_sample(size)
    method = RegionDrag.build({"ip_adapter": args.ip_adapter})
    method.setup(models)
    rows, payload = [], {"size": size, "model": models.describe(), "cudnn_attention": torch.backends.cuda.cudnn_sdp_enabled(), "dense_pairs": int(len(sample.dense_handles)), "ip_adapter": args.ip_adapter}

    ours = time_fn(lambda: method.edit(sample, 42), warmup=1 if args.smoke else 3, repeat=repeat)
    rows.append({"what": "regiondrag (ours, CUDA graphs on GPU)", **ours})
    eager_method = RegionDrag.build({"cuda_graphs": False, "ip_adapter": args.ip_adapter})
    eager_method.setup(models)
    eager = time_fn(lambda: eager_method.edit(sample, 42), warmup=1, repeat=repeat)
    rows.append({"what": "regiondrag (ours, eager)", **eager})
    payload["regiondrag_eager"] = eager
    diff = np.abs(method.edit(sample, 42).image.astype(int) - eager_method.edit(sample, 42).image.astype(int))
    payload["graphs_vs_eager_max_abs_diff"] = int(diff.max())

    def generate():
        models.pipe("a photo of a painting", num_inference_steps=20, guidance_scale=7.5, height=size, width=size,
                    output_type="np", generator=torch.Generator(models.device).manual_seed(0))

    gen = time_fn(generate, warmup=1, repeat=max(2, repeat // 2))
    rows.append({"what": "diffusers 20-step generation (CFG 7.5)", **gen})
    payload["regiondrag"] = ours
    payload["generation_20_steps"] = gen
    payload["ratio_regiondrag_to_generation"] = ours["median_s"] / gen["median_s"]

    payload["breakdown"] = breakdown(models, method, sample)
    rows += [{"what": f"  part: {k}", "median_s": v} for k, v in payload["breakdown"].items()]
    flops = count_flops(lambda: eager_method.edit(sample, 42))  # graph replays are invisible to the counter
    rate = matmul_tflops()
    payload["regiondrag_flops"] = flops
    payload["fp16_matmul_tflops"] = rate
    payload["flop_floor_s"] = flops / (rate * 1e12) if rate == rate else None

    if args.reference is not None:
        import contextlib

        reference = load_reference(args.reference.resolve(), models, method.ip)
        attached = (lambda: method.ip.attached(models.unet, method.config.ip_adapter_scale)) if method.ip else contextlib.nullcontext
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        with attached():
            ref_image = run_reference(reference, sample, 42)
        our_image = method.edit(sample, 42).image
        diff = np.abs(ref_image.astype(int) - our_image.astype(int))
        payload["reference_max_abs_diff"] = int(diff.max())
        payload["reference_mean_abs_diff"] = float(diff.mean())
        payload["reference_identical_fraction"] = float((diff == 0).mean())
        with attached():
            ref = time_fn(lambda: run_reference(reference, sample, 42), warmup=1, repeat=repeat)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False
        rows.append({"what": "regiondrag (reference code)", **ref})
        payload["reference"] = ref
        payload["speedup_vs_reference"] = ref["median_s"] / ours["median_s"]

    if args.batch_sizes:
        payload["batched"] = batched_edits(models, sample, [int(b) for b in args.batch_sizes.split(",")], repeat)
        rows += [{"what": f"regiondrag batch_size={r['batch_size']} (per sample)", "median_s": r["per_sample_s"]}
                 for r in payload["batched"]]

    sync()
    print_table(rows)
    for key in ("graphs_vs_eager_max_abs_diff", "ratio_regiondrag_to_generation", "flop_floor_s", "reference_max_abs_diff", "speedup_vs_reference"):
        if key in payload:
            print(f"{key}: {payload[key]}")
    tag = ("-channels_last" if args.channels_last else "") + ("-cudnn_attention" if args.cudnn_attention else "")
    print(f"wrote {write_result('regiondrag' + tag, payload, args.smoke, args.out)}")


if __name__ == "__main__":
    main()
