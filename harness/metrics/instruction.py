"""The instruction-editing metric set, under two protocols (networks: harness/metrics/instruct_networks.py).

`@magicbrush` — MagicBrush's released evaluator (`evaluation/image_eval.py` @44745b5), which scores the edit
against the **target image** (the human-verified ground truth): `l1` / `l2` = `nn.L1Loss` / `nn.MSELoss` of
the `ToTensor` ([0, 1] float32) images, the edit first PIL-resized (bicubic) to the target's size;
`clip_i` = cosine of CLIP ViT-B/32 `encode_image` embeddings (`clip` package preprocess); `dino` = cosine of
DINO ViT-S/16 class tokens (Resize 256 bicubic, CenterCrop 224, ImageNet normalisation); `clip_t` = cosine of
the edit's CLIP ViT-B/32 image embedding and the text embedding of the target's caption (the sample's output
caption: PIE-Bench's target prompt without `[ ]`). Cosines as `1 − scipy.spatial.distance.cosine` of the
float32 embeddings (scipy then computes in float32, as on the reference's `.float()` tensors).
Where a sample has no target (PIE-Bench, an `instruction_folder` entry without `target`), the image metrics
compare the edit with the **source image** instead (Emu Edit's reading); the per-sample info says which
(`against`).

`@emu_edit` — the Emu Edit test-set metrics (Sheynin et al. 2023). Emu Edit released neither metric code nor
its CLIP/DINO variants; these follow UltraEdit's reimplementation (HaozheZhao/UltraEdit #18, #25), which
reuses MagicBrush's networks and computations with the **source image** in place of the target: `l1`,
`clip_i`, `dino` (source vs edit), `clip_out` (edit vs output caption) and `clip_dir`, InstructPix2Pix's
directional similarity (`metrics/clip_similarity.py`): cos(ê_edit − ê_source, t̂_output − t̂_input) of the
L2-normalised CLIP embeddings. Other papers (ICEdit, OmniGen) report these columns with CLIP ViT-L/14 — a
different number: set `features.clip_vit_b32` to another checkpoint only for a new protocol id.

Parity: MagicBrush's `image_eval.py` (@fcfc892, fetched, run beside these with its `clip`/torch-hub networks
replaced by the same tiny random CLIP ViT-B/32 and DINO ViT-S/16 behind their interfaces) gives the same
`l1`, `l2`, `clip_i`, `dino`, `clip_t` values bit for bit on three samples.

Undefined values are NaN with a reason: no caption, or a caption longer than CLIP's 77 tokens (the reference's
`clip.tokenize` raises there).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from PIL import Image
from scipy.spatial import distance

from harness.metrics import instruct_networks as nets
from harness.metrics.base import Metric, MetricValue
from harness.metrics.clip_vit import PREPROCESS as CLIP_PREPROCESS
from harness.registry import METRICS
from harness.types import PromptEditSample

MAGICBRUSH = "MagicBrush evaluation/image_eval.py @44745b5"
EMU_EDIT = "Emu Edit metrics as UltraEdit reimplements them (MagicBrush's networks, source image as reference)"


def _nan(reason: str) -> MetricValue:
    return MetricValue(float("nan"), info={"nan": reason})


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """`1 − scipy.spatial.distance.cosine(a, b)`, the reference's similarity."""
    return float(1.0 - distance.cosine(a, b))


class InstructionMetric(Metric):
    families = ("prompt",)
    higher_is_better = True
    protocol: ClassVar[str] = MAGICBRUSH
    against: ClassVar[str] = "source"  # target: the sample's ground truth where it has one, else the source

    def reference(self, sample: PromptEditSample) -> tuple[np.ndarray, str]:
        if self.against == "target" and sample.ground_truth is not None:
            return sample.ground_truth, "target"
        return sample.image, "source"

    def compute(self, sample: PromptEditSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        image, against = self.reference(sample)
        value = MetricValue(self.value(sample, image, edited))
        value.info = {"against": against}
        return value

    def value(self, sample: PromptEditSample, reference: np.ndarray, edited: np.ndarray) -> float:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        against = ("target image where the sample has one, else the source image" if self.against == "target"
                   else "source image")
        return {"protocol": self.protocol, "against": against}


class PixelDistance(InstructionMetric):
    higher_is_better = False
    loss: ClassVar[str] = "l1"

    def value(self, sample, reference, edited):
        if edited.shape != reference.shape:  # the reference resizes the edit to the target's size
            edited = np.asarray(Image.fromarray(edited).resize(reference.shape[1::-1], Image.BICUBIC))
        # ToTensor's layout and arithmetic (C×H×W, uint8 → float32, ÷255): the loss's float32 sum order then
        # matches the reference's exactly
        a, b = (torch.tensor(x).permute(2, 0, 1).contiguous().float().div(255)  # a copy: samples are read-only
                for x in (edited, reference))
        loss = torch.nn.L1Loss() if self.loss == "l1" else torch.nn.MSELoss()
        return float(loss(a, b))

    def settings(self):
        return super().settings() | {"loss": f"nn.{'L1Loss' if self.loss == 'l1' else 'MSELoss'} (mean)",
                                     "input": "ToTensor [0, 1] float32; edit PIL-bicubic to the reference's size"}


class ClipImage(InstructionMetric):
    def value(self, sample, reference, edited):
        return cosine(nets.clip_image_embedding(self.context, edited), nets.clip_image_embedding(self.context, reference))

    def settings(self):
        return super().settings() | {"network": nets.clip_identity(self.context), "embedding": "encode_image",
                                     "preprocess": CLIP_PREPROCESS, "similarity": "1 - scipy cosine distance"}


class Dino(InstructionMetric):
    def value(self, sample, reference, edited):
        return cosine(nets.dino_embedding(self.context, edited), nets.dino_embedding(self.context, reference))

    def settings(self):
        return super().settings() | {"network": nets.dino(self.context)[1], "embedding": "class token after final norm",
                                     "preprocess": nets.DINO_PREPROCESS, "dtype": "float32",
                                     "similarity": "1 - scipy cosine distance"}


class ClipText(InstructionMetric):
    """Edit vs output caption (MagicBrush's CLIP-T, Emu Edit's CLIP-out)."""

    inputs = ("target_prompt",)

    def compute(self, sample, edited, record):
        caption = sample.encode_target_prompt
        if not caption:
            return _nan("the sample has no output caption (target prompt)")
        text = nets.clip_text_embedding(self.context, caption)
        if text is None:
            return _nan("output caption longer than CLIP's 77 tokens")
        return MetricValue(cosine(nets.clip_image_embedding(self.context, edited), text))

    def settings(self):
        return {"protocol": self.protocol, "network": nets.clip_identity(self.context),
                "text": "output caption (target prompt without [ ]), 77 tokens, no truncation",
                "similarity": "1 - scipy cosine distance of encode_image and encode_text"}


class ClipDirection(InstructionMetric):
    """cos(ê_edit − ê_source, t̂_output − t̂_input), embeddings L2-normalised (InstructPix2Pix's definition)."""

    inputs = ("prompt", "target_prompt")

    def compute(self, sample, edited, record):
        captions = sample.encode_source_prompt, sample.encode_target_prompt
        if not all(captions):
            return _nan("the sample needs an input and an output caption (source and target prompt)")
        texts = [nets.clip_text_embedding(self.context, c) for c in captions]
        if any(t is None for t in texts):
            return _nan("a caption is longer than CLIP's 77 tokens")
        images = [nets.clip_image_embedding(self.context, x) for x in (sample.image, edited)]
        unit = [v / np.linalg.norm(v) for v in (*images, *texts)]
        return MetricValue(cosine(unit[1] - unit[0], unit[3] - unit[2]))

    def settings(self):
        return {"protocol": self.protocol, "network": nets.clip_identity(self.context),
                "direction": "normalised image embeddings (edit - source) vs normalised text embeddings "
                             "(output - input caption)", "text": "source/target prompt without [ ], 77 tokens"}


def _register(cls: type[InstructionMetric], metric_id: str, **attrs: Any) -> None:
    METRICS.register(metric_id)(type(metric_id, (cls,), {"id": metric_id, **attrs}))


_MB = dict(protocol=MAGICBRUSH, against="target")
_register(PixelDistance, "l1@magicbrush", loss="l1", **_MB)
_register(PixelDistance, "l2@magicbrush", loss="l2", **_MB)
_register(ClipImage, "clip_i@magicbrush", **_MB)
_register(Dino, "dino@magicbrush", **_MB)
_register(ClipText, "clip_t@magicbrush", **_MB)
_EMU = dict(protocol=EMU_EDIT, against="source")
_register(PixelDistance, "l1@emu_edit", loss="l1", **_EMU)
_register(ClipImage, "clip_i@emu_edit", **_EMU)
_register(Dino, "dino@emu_edit", **_EMU)
_register(ClipText, "clip_out@emu_edit", **_EMU)
_register(ClipDirection, "clip_dir@emu_edit", **_EMU)
