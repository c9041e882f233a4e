"""The gallery: each sample's source with its drag drawn on it, beside every method's output.

Drawing happens on the thumbnail (coordinates scaled to it) so lines stay one or two pixels wide whatever
the source size: handle regions and points in red, target regions and points in blue, a yellow arrow
from each handle to its target. Non-drag samples are shown as they are, captioned with their prompt.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from harness.report import html as H
from harness.types import DragSample

HANDLE = (230, 40, 40)
TARGET = (40, 90, 240)
ARROW = (255, 215, 0)


def fit(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """`image` resized so that its longer side is `side` (up or down), and the scale factor used."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=interpolation), scale


def _outline(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    small = cv2.resize(mask.astype(np.uint8), (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, colour, 1, lineType=cv2.LINE_AA)


def annotate(sample: Any, side: int = 256) -> np.ndarray:
    """The sample's source as a `side`-pixel thumbnail with its regions, points and arrows drawn."""
    canvas, s = fit(sample.image, side)
    canvas = canvas.copy()
    if not isinstance(sample, DragSample):
        return canvas
    if not sample.editing_mask.all():
        _outline(canvas, sample.editing_mask, (255, 255, 255))
    for region in sample.regions:
        for shape, colour in ((region.handle, HANDLE), (region.target, TARGET)):
            if region.kind == "polygon":
                cv2.polylines(canvas, [np.round(np.asarray(shape) * s).astype(np.int32)], True, colour, 1, cv2.LINE_AA)
            else:
                _outline(canvas, shape, colour)
    for (hx, hy), (tx, ty) in zip(sample.handles * s, sample.targets * s):
        start, end = (round(hx), round(hy)), (round(tx), round(ty))
        cv2.arrowedLine(canvas, start, end, ARROW, 1, cv2.LINE_AA, tipLength=0.2)
        cv2.circle(canvas, start, 3, HANDLE, -1, cv2.LINE_AA)
        cv2.circle(canvas, end, 3, TARGET, -1, cv2.LINE_AA)
    return canvas


def gallery_row(sample: Any, outputs: Sequence[tuple[str, np.ndarray | None]], side: int = 256) -> str:
    """One row: the annotated source, then each (label, output) at the same size (None: no output)."""
    text = getattr(sample, "prompt", "") or getattr(sample, "target_prompt", "")
    caption = sample.sample_id + (f" — “{text}”" if text else "")
    figures = [H.figure(H.thumbnail_png(annotate(sample, side), side), caption)]
    if getattr(sample, "reference", None) is not None:  # exemplar editing: show the exemplar too
        figures.append(H.figure(H.thumbnail_png(fit(sample.reference, side)[0], side), "reference"))
    for label, image in outputs:
        if image is None:
            figures.append(f'<figure><div style="width:{side}px">{H.MISSING}</div><figcaption>{H.esc(label)}</figcaption></figure>')
        else:
            figures.append(H.figure(H.thumbnail_png(fit(image, side)[0], side), label))
    return f'<div class="gallery-row">{"".join(figures)}</div>'
