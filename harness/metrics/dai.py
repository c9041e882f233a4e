"""DAI, GoodDrag's Drag Accuracy Index (protocols_2025.md §6.3, `evaluation/compute_DAI.py`): how well the
patch around each handle of the source reappears around its target in the edit.

Both images go to [0, 1] float32 H×W×C as `transforms.ToTensor()` makes them (no resizing: the edit must have
the source's size). ψ(I, p, r) = I[y−r : y+r+1, x−r : x+r+1]; for one image with N pairs

    DAI_img = Σᵢ ‖ψ(I₀, hᵢ, r) − ψ(I, tᵢ, r)‖² / N / (2r+1)² / N     (`@gooddrag`, as released)
    DAI_img = Σᵢ ‖ψ(I₀, hᵢ, r) − ψ(I, tᵢ, r)‖² / N / (2r+1)²         (`@paper`, the paper's formula)

with the squared norm summed over pixels and channels. The released function divides by N, then by the
patch size, and returns the result ÷ N again; the ids keep the two apart: `dai_r{1,5,10,20}@gooddrag`
and `dai_r{1,5,10,20}@paper`. The score is the mean of DAI_img over images (GoodDrag only logs it).

Windows at the border (`features.dai_border`):
- `as_released` (default): Python slicing, as the script does. A start above the edge is negative and
  counts from the far end ("wraps around"), which usually empties the window; a stop past the edge is cut.
  Windows of different shapes are then subtracted with numpy broadcasting; where they cannot be broadcast
  the released script raises, and the value is undefined with that reason.
- `clamp`: full (2r+1)² windows whose pixels outside the image read the nearest edge pixel.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from harness.metrics.base import Metric, MetricValue
from harness.registry import METRICS
from harness.types import DragSample

RADII = (1, 5, 10, 20)
BORDERS = ("as_released", "clamp")


def to_tensor_hwc(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×C → float32 in [0, 1], as `ToTensor()(image).permute(1, 2, 0).numpy()`: a channel-first
    buffer viewed as H×W×C, because numpy sums a window in memory order and the released numbers carry
    that float32 rounding."""
    chw = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)
    return chw.transpose(1, 2, 0)


def window(image: np.ndarray, center: tuple[int, int], radius: int, border: str) -> np.ndarray:
    """ψ(I, (x, y), r) under a border rule (module docstring)."""
    x, y = center
    if border == "as_released":
        return image[y - radius:y + radius + 1, x - radius:x + radius + 1]
    rows = np.clip(np.arange(y - radius, y + radius + 1), 0, image.shape[0] - 1)
    cols = np.clip(np.arange(x - radius, x + radius + 1), 0, image.shape[1] - 1)
    return image[rows[:, None], cols[None, :]]


def dai_image(source: np.ndarray, edited: np.ndarray, handles: np.ndarray, targets: np.ndarray, radius: int,
              divide_by_n_twice: bool, border: str = "as_released") -> float:
    """DAI of one image; raises ValueError where the released script would (windows that do not broadcast)."""
    if source.shape != edited.shape:
        raise ValueError(f"DAI compares images of one size, got {source.shape} and {edited.shape} (no resizing)")
    a, b = to_tensor_hwc(source), to_tensor_hwc(edited)
    total = 0
    for h, t in zip(handles.astype(np.int64).tolist(), targets.astype(np.int64).tolist()):
        total += np.sum(np.square(window(a, h, radius, border) - window(b, t, radius, border)))
    n = len(handles)
    total /= n
    total /= (1 + 2 * radius) ** 2
    return float(total / n if divide_by_n_twice else total)


class _Dai(Metric):
    families = ("drag",)
    radius: ClassVar[int] = 5
    divide_by_n_twice: ClassVar[bool] = True

    @property
    def border(self) -> str:
        border = str(self.context.features.get("dai_border", "as_released"))
        if border not in BORDERS:
            raise ValueError(f"features.dai_border must be one of {list(BORDERS)}, got {border!r}")
        return border

    def compute(self, sample: DragSample, edited: np.ndarray, record: Mapping[str, Any]) -> MetricValue:
        try:
            value = dai_image(sample.image, edited, sample.handles, sample.targets, self.radius,
                              self.divide_by_n_twice, self.border)
        except ValueError as exc:
            if "broadcast" not in str(exc):
                raise
            return MetricValue(float("nan"), info={"nan": "windows at the image border have shapes that do not "
                                                          f"broadcast; the released compute_DAI.py raises here ({exc})"})
        return MetricValue(value)

    def settings(self) -> dict[str, Any]:
        return {"radius": self.radius, "divide_by_n": "twice (as released)" if self.divide_by_n_twice else "once (paper)",
                "input": "[0,1] float32 HWC (ToTensor), no resizing", "border": self.border}


for _r in RADII:
    for _protocol, _twice in (("gooddrag", True), ("paper", False)):
        _id = f"dai_r{_r}@{_protocol}"
        METRICS.register(_id)(type(_id, (_Dai,), {"id": _id, "radius": _r, "divide_by_n_twice": _twice}))
