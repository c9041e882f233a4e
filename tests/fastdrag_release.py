"""Run the released FastDrag `utils/ui_utils.py::run_drag` (@def3c4e, the function its benchmark script
calls, Q-10) on saved tiny weights on the CPU and store its intermediate tensors, for tests/test_fastdrag.py.

Usage (in an environment with the release's own diffusers 0.24 / transformers 4.36, the release's checkout
first on the path; nothing of it is committed here):
    python tests/fastdrag_release.py <FastDrag checkout> <weights dir> <case.npz> <out.npz> [float16|float32]

Only what cannot run here is replaced, none of the algorithm: gradio (its return value becomes
`{"value": image}`), pytorch_lightning's seeding, model CPU offload (needs a GPU), the hard-coded `.cuda()`
and `.to('cuda')` (→ CPU), peft hidden (not in its environment) and torchvision's tensor `resize` default
put back to v0.15's (no antialias). The release's own pipeline, UNet with K/V cache, warpage, BNNI and DDIM run as
released, in float16 as released or, with `float32`, with every float16 of the release mapped to float32
(the comparison within float32 rounding)."""
from __future__ import annotations

import sys
import types

import numpy as np
import torch


def _missing(name: str) -> type:
    if name.startswith("_"):
        raise AttributeError(name)
    return type(name, (), {})


def stub_modules(fp32: bool) -> None:
    gradio = types.ModuleType("gradio")
    gradio.Image = types.SimpleNamespace(update=lambda value: {"value": value})
    gradio.Warning = lambda *a, **k: None
    gradio.__getattr__ = lambda name: _missing(name)  # annotations such as gr.SelectData
    sys.modules["gradio"] = gradio
    lightning = types.ModuleType("pytorch_lightning")
    lightning.seed_everything = lambda seed: torch.manual_seed(seed)
    sys.modules["pytorch_lightning"] = lightning
    sys.modules["peft"] = None  # not in the release's environment (diffusers then takes its non-PEFT LoRA paths)
    torch.Tensor.cuda = lambda self, *a, **k: self
    import torchvision.transforms.functional as tvf
    resize = tvf.resize
    # torchvision 0.15 (the release's) resized tensors without antialias by default; later versions antialias
    tvf.resize = lambda img, size, *a, antialias=False, **k: resize(img, size, *a, antialias=antialias, **k)
    to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):
        args = tuple("cpu" if a == "cuda" else torch.float32 if fp32 and a is torch.float16 else a for a in args)
        if fp32 and kwargs.get("dtype") is torch.float16:
            kwargs["dtype"] = torch.float32
        return to(self, *args, **kwargs)
    torch.Tensor.to = to_cpu
    if fp32:  # every float16 of the release (weights, image, latent recasts) becomes float32
        torch.nn.Module.half = lambda self: self
        torch.Tensor.half = lambda self, *a, **k: self


def main(release: str, weights: str, case_path: str, out_path: str, dtype: str = "float16") -> None:
    fp32 = dtype == "float32"
    stub_modules(fp32)
    sys.path.insert(0, release)
    import drag_pipeline
    from utils import ui_utils

    drag_pipeline.DragPipeline.enable_model_cpu_offload = lambda self, *a, **k: None
    record: dict[str, np.ndarray] = {}
    invert, stretch = drag_pipeline.DragPipeline.invert, ui_utils.drag_stretch_multipoint_ratio_interp

    def recording_invert(self, *args, **kwargs):
        self.unet_for_record = self.unet
        z = invert(self, *args, **kwargs)
        record["inverted"] = z.float().numpy()
        return z

    def recording_stretch(*args, **kwargs):
        z = stretch(*args, **kwargs)
        record["warped"] = z.float().numpy()
        return z

    steps = []
    from diffusers import DDIMScheduler
    step = DDIMScheduler.step

    def recording_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        steps.append(out[0].to(torch.float16).float().numpy())
        return out

    drag_pipeline.DragPipeline.invert = recording_invert
    ui_utils.drag_stretch_multipoint_ratio_interp = recording_stretch
    DDIMScheduler.step = recording_step
    case = np.load(case_path)
    pipes = []
    from_pretrained = drag_pipeline.DragPipeline.from_pretrained

    def keep(*args, **kwargs):
        pipes.append(from_pretrained(*args, **dict(kwargs, torch_dtype=torch.float32 if fp32 else torch.float16)))
        return pipes[-1]
    drag_pipeline.DragPipeline.from_pretrained = keep
    unet_from_pretrained = ui_utils.UNet2DConditionModel.from_pretrained
    ui_utils.UNet2DConditionModel.from_pretrained = lambda *a, **k: unet_from_pretrained(
        *a, **dict(k, torch_dtype=torch.float32 if fp32 else torch.float16))
    out = ui_utils.run_drag(case["image"], None, case["mask"], str(case["prompt"]), case["points"].tolist(),
                            inversion_strength=0.7, model_path=f"{weights}/sd", vae_path="default", lora_path="",
                            start_step=0, start_layer=10, n_inference_step=10, task_cat="continuous drag",
                            fill_mode="interpolation", use_kv_cp="default", use_lora_="default",
                            lcm_model_path=f"{weights}/lcm", testif=1)
    record["image"] = out["value"]
    record["steps"] = np.stack(steps)
    blocks = [m for m in pipes[-1].unet.modules() if getattr(m, "updown", None) == "up" and hasattr(m, "buffer_key")]
    for b, attn in enumerate(blocks):
        for it, key in attn.buffer_key.items():
            record[f"k/{b}/{it}"] = key.float().numpy()
            record[f"v/{b}/{it}"] = attn.buffer_value[it].float().numpy()
    np.savez(out_path, **record)


if __name__ == "__main__":
    main(*sys.argv[1:6])
