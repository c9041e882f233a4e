"""What a judge sees of a sample, per editing family (VIEScore SC: images and the instruction text).

- prompt (PIE-Bench): [source, edited]; instruction = the sample's `editing_instruction`
  (`PromptEditSample.instruction`). A sample without one has no SC (undefined), as the instruction is the
  thing judged.
- drag: [source with the drag drawn on it, edited]. Drawing (`draw_drag`): on a copy of the source, for
  each handle→target pair an arrow from handle to target (red, RGB 255,0,0), a filled red disc on the
  handle and a filled blue disc (0,0,255) on the target; line thickness t = max(2, round(min(H, W) / 170)),
  disc radius 2t, arrow-head length 0.2 of the arrow (OpenCV `arrowedLine`, anti-aliased). Instruction:
  "Move the content at each red dot to the blue dot its arrow points to, keeping everything else
  unchanged." followed, when the sample has a prompt, by " The image shows: <prompt>." (the prompt with
  surrounding whitespace and a trailing period removed). The editable mask is not drawn.
- exemplar: [source, exemplar, edited]; subject = the sample's prompt, or "the object in the second
  image" when it has none (COCOEE samples carry no text).
"""
from __future__ import annotations

import numpy as np

from harness.types import DragSample, ExemplarSample, PromptEditSample, Sample

DRAG_INSTRUCTION = "Move the content at each red dot to the blue dot its arrow points to, keeping everything else unchanged."
DEFAULT_SUBJECT = "the object in the second image"


def draw_drag(image: np.ndarray, handles: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The source with each handle→target arrow drawn on it (a new array)."""
    import cv2

    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    t = max(2, round(min(canvas.shape[:2]) / 170))
    for (hx, hy), (tx, ty) in zip(np.asarray(handles, float), np.asarray(targets, float)):
        h, g = (int(round(hx)), int(round(hy))), (int(round(tx)), int(round(ty)))
        cv2.arrowedLine(canvas, h, g, (255, 0, 0), t, cv2.LINE_AA, tipLength=0.2)
        cv2.circle(canvas, h, 2 * t, (255, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(canvas, g, 2 * t, (0, 0, 255), -1, cv2.LINE_AA)
    return canvas


def drag_instruction(prompt: str) -> str:
    prompt = (prompt or "").strip().rstrip(".").strip()
    return DRAG_INSTRUCTION + (f" The image shows: {prompt}." if prompt else "")


def sc_inputs(sample: Sample, edited: np.ndarray) -> tuple[list[np.ndarray], dict[str, str]]:
    """(images, template fields) of the SC prompt for `sample`; ValueError when the sample lacks what the
    judge needs (the metric records it as undefined)."""
    if isinstance(sample, PromptEditSample):
        if not sample.instruction.strip():
            raise ValueError("sample has no editing_instruction")
        return [sample.image, edited], {"instruction": sample.instruction.strip()}
    if isinstance(sample, DragSample):
        return [draw_drag(sample.image, sample.handles, sample.targets), edited], {"instruction": drag_instruction(sample.prompt)}
    if isinstance(sample, ExemplarSample):
        return [sample.image, sample.reference, edited], {"subject": sample.prompt.strip() or DEFAULT_SUBJECT}
    raise TypeError(f"no judge inputs for {type(sample).__name__}")
