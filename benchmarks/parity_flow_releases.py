"""Parity of editlab's FLUX editors with the released code, on the same tiny random FLUX weights (CPU, fp32).

For each release the script runs its own inversion/edit loop (RF-Solver-Edit `denoise`, FireFlow
`denoise_fireflow`, KV-Edit `Flux_kv_edit.forward`, FlowEdit `FlowEditFLUX`) and editlab's method on one
PIE-Bench-like 64×64 sample, records the latents entering **every transformer call** on both sides, and
reports the largest difference per call and of the final latents. The three black-forest-labs-based releases
run their own `Flux` module with the diffusers weights mapped onto it (benchmarks/flux_reference.py); FlowEdit
runs on the same diffusers pipeline. Shims, all numerically neutral: the releases' `.cuda()` on stored features
is the identity on the CPU; KV-Edit's bf16 attention bias is built in fp32 (the CPU fp32 SDPA refuses a bf16
mask); FlowEdit sees diffusers ≤ 0.31's `vae_scale_factor` 16 (`OldFluxPipe`); `imwatermark` (imported by KV-Edit's `flux.util` for saving images) is a stub; the releases' text encoders are replaced by editlab's prompt encoding (same tensors for both sides).

    python benchmarks/parity_flow_releases.py --releases /tmp/rel --out benchmarks/results/parity_flow_releases.json

`--releases` holds the fetched repositories (`<owner>+<name>/…`, e.g. `python -m harness` never needs them);
the release code needs `einops` (`pip install einops`).
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.flux_reference import bfl_model, load_release  # noqa: E402
from harness.flow import latents as L  # noqa: E402
from harness.models import load_models  # noqa: E402
from harness.registry import METHODS  # noqa: E402
from tests.pie_fixtures import pie_sample  # noqa: E402

REPOS = {"rf_solver_edit": "wangjiangshan0725+RF-Solver-Edit/FLUX_Image_Edit/src",
         "fireflow": "HolmesShuan+FireFlow-Fast-Inversion-of-Rectified-Flow-for-Image-Semantic-Editing/src",
         "kv_edit": "Xilluill+KV-Edit", "flowedit": "fallenshock+FlowEdit"}
SETTINGS = {"rf_solver_edit": dict(steps=4, inject=2, guidance=2.0), "fireflow": dict(steps=4, inject=2),
            "kv_edit": dict(steps=5, skip_step=1), "flowedit": dict(steps=5, n_max=4)}


class Recorder:
    """Latents entering the diffusers transformer, call by call."""

    def __init__(self, transformer) -> None:
        self.calls: list[torch.Tensor] = []
        self.handle = transformer.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        self.calls.append(kwargs["hidden_states"].detach().clone())


def ours(name: str, models, sample, **change) -> tuple[list[torch.Tensor], torch.Tensor]:
    method = METHODS.get(name).build({**SETTINGS[name], **change})
    method.setup(models)
    final = {}

    def keep(packed, like):
        final["z"] = packed
        return sample.image
    method.decode = keep
    rec = Recorder(models.pipe.transformer)
    try:
        method.edit(sample, 1234)
    finally:
        rec.handle.remove()
    return rec.calls, final["z"]


def bfl_inputs(models, sample):
    pipe = models.pipe
    packed = L.encode_image(pipe, sample.image)
    src, tar = L.encode_text(pipe, sample.encode_source_prompt), L.encode_text(pipe, sample.encode_target_prompt)

    def inp(text, img):
        return dict(img=img, img_ids=packed.ids[None], txt=text.embeds, txt_ids=text.ids[None], vec=text.pooled)
    return packed, inp(src, packed.latents), inp(tar, packed.latents)


def recorded_model(model):
    calls, forward = [], model.forward

    def wrapped(*args, **kwargs):
        calls.append(kwargs["img"].detach().clone())
        return forward(*args, **kwargs)
    model.forward = wrapped
    return model, calls


def release_value_sharing(name: str, root: Path, models, sample):
    model_mod, sampling = load_release(root / REPOS[name])
    model, calls = recorded_model(bfl_model(model_mod, models.pipe.transformer))
    c = METHODS.get(name).Config(**SETTINGS[name])
    packed, src, tar = bfl_inputs(models, sample)
    info = {"feature": {}, "inject_step": c.inject, "feature_path": "unused", "start_layer_index": c.start_layer,
            "end_layer_index": c.end_layer, "reuse_v": 1, "editing_strategy": "replace_v", "qkv_ratio": [1.0, 1.0, 1.0]}
    loop = sampling.denoise if name == "rf_solver_edit" else getattr(sampling, f"denoise_{c.solver}")
    times = sampling.get_schedule(c.steps, packed.latents.shape[1])
    z, info = loop(model, **src, timesteps=times, guidance=c.inversion_guidance, inverse=True, info=info)
    tar["img"] = z
    x, _ = loop(model, **tar, timesteps=times, guidance=c.guidance, inverse=False, info=info)
    return calls, x


def release_kv_edit(root: Path, models, sample):
    model_mod, _ = load_release(root / REPOS["kv_edit"])
    stub = types.ModuleType("imwatermark")  # flux.util imports the watermarker for its image saving only
    stub.WatermarkEncoder = type("WatermarkEncoder", (), {"set_watermark": lambda self, *a: None})
    sys.modules.setdefault("imwatermark", stub)
    sys.path.insert(0, str(root / REPOS["kv_edit"]))
    kv = __import__("models.kv_edit", fromlist=["Flux_kv_edit"])
    sys.path.pop(0)
    model, calls = recorded_model(bfl_model(model_mod, models.pipe.transformer, "Flux_kv"))
    editor = kv.Flux_kv_edit.__new__(kv.Flux_kv_edit)
    torch.nn.Module.__init__(editor)
    editor.model, editor.device, editor.name = model, torch.device("cpu"), "flux-dev"
    scale = kv.only_Flux.create_attention_scale
    editor.create_attention_scale = lambda *a, **k: scale(editor, *a, **k).float()  # fp32 CPU SDPA shim
    c = METHODS.get("kv_edit").Config(**SETTINGS["kv_edit"])
    packed, src, tar = bfl_inputs(models, sample)
    opts = types.SimpleNamespace(height=sample.image.shape[0], width=sample.image.shape[1], denoise_num_steps=c.steps,
                                 skip_step=c.skip_step, inversion_guidance=c.inversion_guidance,
                                 denoise_guidance=c.guidance, attn_scale=c.attn_scale, re_init=c.re_init,
                                 attn_mask=c.attn_mask)
    mask = torch.from_numpy(sample.mask.astype(np.float32))[None, None]
    z0 = editor(src, tar, mask, opts)  # unpacked (1, 16, h, w)
    return calls, models.pipe._pack_latents(z0, 1, 16, z0.shape[2], z0.shape[3])


class OldFluxPipe:
    """FlowEdit computes the pixel size as `latent · vae_scale_factor // 2`, written when diffusers' FluxPipeline
    had `vae_scale_factor` 16 (≤ 0.31; 8 since, with the ×2 packing moved into its helpers): this view gives
    the release 16 there and the pipeline's own helpers otherwise."""

    vae_scale_factor = 16

    def __init__(self, pipe) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def _unpack_latents(self, latents, height, width, vae_scale_factor):
        return self._pipe._unpack_latents(latents, height, width, self._pipe.vae_scale_factor)


def release_flowedit(root: Path, models, sample):
    sys.path.insert(0, str(root / REPOS["flowedit"]))
    import FlowEdit_utils  # noqa: E402
    sys.path.pop(0)
    pipe, c = models.pipe, METHODS.get("flowedit").Config(**SETTINGS["flowedit"])
    packed = L.encode_image(pipe, sample.image)
    x_src = pipe._unpack_latents(packed.latents, packed.height, packed.width, pipe.vae_scale_factor)
    rec = Recorder(pipe.transformer)
    torch.manual_seed(1234)  # the release draws with randn_like from the global generator
    try:
        out = FlowEdit_utils.FlowEditFLUX(OldFluxPipe(pipe), pipe.scheduler, x_src, sample.encode_source_prompt,
                                          sample.encode_target_prompt, "", c.steps, c.n_avg, c.source_guidance,
                                          c.guidance, c.n_min, c.n_max)
    finally:
        rec.handle.remove()
    return rec.calls, pipe._pack_latents(out, 1, 16, out.shape[2], out.shape[3])


def compare(a: list[torch.Tensor], b: list[torch.Tensor], final: tuple[torch.Tensor, torch.Tensor]) -> dict:
    per_call = [float((x - y).abs().max()) for x, y in zip(a, b)]
    return {"calls": [len(a), len(b)], "max_abs_diff_per_call": per_call, "max_abs_diff_final": float((final[0] - final[1]).abs().max()),
            "latent_abs_max": float(final[0].abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--releases", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the releases move stored features to the GPU
    models = load_models({"name": "tiny_flux", "source": "random", "pipeline": "flux", "arch": "tiny", "seed": 0,
                          "dtype": "float32", "device": "cpu"})
    sample = pie_sample()
    results = {}
    for name in ("rf_solver_edit", "fireflow", "kv_edit", "flowedit"):
        with torch.no_grad():
            mine, z = ours(name, models, sample)
            if name == "kv_edit":
                theirs, z_ref = release_kv_edit(args.releases, models, sample)
            elif name == "flowedit":
                theirs, z_ref = release_flowedit(args.releases, models, sample)
            else:
                theirs, z_ref = release_value_sharing(name, args.releases, models, sample)
        results[name] = {"settings": SETTINGS[name], **compare(mine, theirs, (z, z_ref))}
        print(name, results[name]["calls"], max(results[name]["max_abs_diff_per_call"]), results[name]["max_abs_diff_final"])
    with torch.no_grad():  # a control: the comparison does see a changed setting (no V sharing on our side)
        mine, z = ours("rf_solver_edit", models, sample, inject=0)
        theirs, z_ref = release_value_sharing("rf_solver_edit", args.releases, models, sample)
    results["control_rf_solver_edit_inject0_vs_release_inject2"] = compare(mine, theirs, (z, z_ref))
    print("control", results["control_rf_solver_edit_inject0_vs_release_inject2"]["max_abs_diff_final"])
    meta = {"device": "cpu", "dtype": "float32", "torch": torch.__version__, "model": "tiny_flux (random, seed 0)",
            "sample": "tests/pie_fixtures.pie_sample() 64×64", "command": " ".join(sys.argv)}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
