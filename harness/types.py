"""Sample and result types shared by datasets, methods and metrics.

Samples are immutable: a method or metric that changes a sample's image or points would silently change
what every later stage sees. Coordinates are (x, y) pixels everywhere; conversions to latent or feature
grids happen inside the code that needs them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Family = Literal["drag", "prompt", "exemplar"]


def _frozen_array(a: np.ndarray | None, dtype: Any) -> np.ndarray | None:
    if a is None:
        return None
    a = np.ascontiguousarray(a, dtype=dtype)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class RegionPair:
    """One region correspondence drawn by a user.

    `kind` is "polygon" (3 vertices: affine map, 4 vertices: perspective map; (x, y) pixel vertices) or
    "mask" (two boolean H×W masks, mapped with RegionDrag's column-wise rescaling).
    """

    kind: Literal["polygon", "mask"]
    handle: np.ndarray
    target: np.ndarray

    def __post_init__(self) -> None:
        dtype = np.float64 if self.kind == "polygon" else bool
        object.__setattr__(self, "handle", _frozen_array(self.handle, dtype))
        object.__setattr__(self, "target", _frozen_array(self.target, dtype))


@dataclass(frozen=True)
class DragSample:
    """A drag-editing sample.

    `handles`/`targets` are the sparse user points (N, 2) in (x, y) pixels; they are what point metrics
    score against. `dense_handles`/`dense_targets` are the dense pairs implied by regions (RegionDrag's
    input); methods that need dense pairs use `edit_handles`/`edit_targets`, which fall back to the
    sparse points. `ground_truth` is the image the drag should produce, where a benchmark has one
    (VFD-Bench's later video frame; the original image in a drag-back leg): metrics `*_gt@…` score
    against it, and methods never see it.
    """

    sample_id: str
    image: np.ndarray  # uint8 H×W×3
    prompt: str
    handles: np.ndarray  # float (N, 2) (x, y)
    targets: np.ndarray  # float (N, 2) (x, y)
    mask: np.ndarray  # bool H×W, True = editable
    regions: tuple[RegionPair, ...] = ()
    dense_handles: np.ndarray | None = None
    dense_targets: np.ndarray | None = None
    edit_mask: np.ndarray | None = None  # mask used for editing when it differs from `mask` (region files)
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    family: Family = "drag"
    ground_truth: np.ndarray | None = None  # uint8 H×W×3, the source's size

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _frozen_array(self.image, np.uint8))
        object.__setattr__(self, "ground_truth", _frozen_array(self.ground_truth, np.uint8))
        if self.ground_truth is not None and self.ground_truth.shape != self.image.shape:
            raise ValueError(f"{self.sample_id}: ground truth {self.ground_truth.shape} and image {self.image.shape} differ")
        object.__setattr__(self, "handles", _frozen_array(np.reshape(self.handles, (-1, 2)), np.float64))
        object.__setattr__(self, "targets", _frozen_array(np.reshape(self.targets, (-1, 2)), np.float64))
        object.__setattr__(self, "mask", _frozen_array(self.mask, bool))
        object.__setattr__(self, "edit_mask", _frozen_array(self.edit_mask, bool))
        if self.dense_handles is not None:
            object.__setattr__(self, "dense_handles", _frozen_array(np.reshape(self.dense_handles, (-1, 2)), np.float64))
            object.__setattr__(self, "dense_targets", _frozen_array(np.reshape(self.dense_targets, (-1, 2)), np.float64))
        if self.handles.shape != self.targets.shape:
            raise ValueError(f"{self.sample_id}: handles {self.handles.shape} and targets {self.targets.shape} differ")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the source image."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def edit_handles(self) -> np.ndarray:
        return self.dense_handles if self.dense_handles is not None else self.handles

    @property
    def edit_targets(self) -> np.ndarray:
        return self.dense_targets if self.dense_targets is not None else self.targets

    @property
    def editing_mask(self) -> np.ndarray:
        return self.edit_mask if self.edit_mask is not None else self.mask

    def replace(self, **changes: Any) -> "DragSample":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class PromptEditSample:
    """A prompt- or instruction-editing sample (PIE-Bench style). Prompts keep their `[ ]` markers; `encode_*`
    strip them. `instruction` is what instruction editors read; `ground_truth` is the target image where a
    benchmark has one (MagicBrush-style `instruction_folder` datasets): the `@magicbrush` metrics score
    against it, and methods never see it."""

    sample_id: str
    image: np.ndarray
    source_prompt: str
    target_prompt: str
    blended_words: tuple[str, ...] = ()
    mask: np.ndarray | None = None  # bool H×W, True = region to edit
    edit_type: int = -1
    edit_type_name: str = ""
    instruction: str = ""
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    family: Family = "prompt"
    ground_truth: np.ndarray | None = None  # uint8 H×W×3 target image

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _frozen_array(self.image, np.uint8))
        object.__setattr__(self, "mask", _frozen_array(self.mask, bool))
        object.__setattr__(self, "ground_truth", _frozen_array(self.ground_truth, np.uint8))

    @property
    def encode_source_prompt(self) -> str:
        return self.source_prompt.replace("[", "").replace("]", "")

    @property
    def encode_target_prompt(self) -> str:
        return self.target_prompt.replace("[", "").replace("]", "")

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True)
class ExemplarSample:
    """An exemplar-editing sample (COCOEE style): fill `mask` in `image` with the object in `reference`."""

    sample_id: str
    image: np.ndarray
    mask: np.ndarray  # bool H×W, True = region to fill
    reference: np.ndarray
    prompt: str = ""
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    family: Family = "exemplar"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _frozen_array(self.image, np.uint8))
        object.__setattr__(self, "mask", _frozen_array(self.mask, bool))
        object.__setattr__(self, "reference", _frozen_array(self.reference, np.uint8))

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


Sample = DragSample | PromptEditSample | ExemplarSample


@dataclass
class EditResult:
    """What a method returns for one sample.

    `image` is uint8 H×W×3 at the source size (methods resize back as their protocol says).
    `timings` holds stage times in seconds measured by the method itself (e.g. `lora`), which the
    harness adds to its own edit timing; `info` is free-form, JSON-serialisable provenance
    (timesteps used, cache hits, the step at which something went wrong).
    """

    image: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
