"""Tiny PIE-Bench-like samples for the prompt-editing tests (64×64, PIE-Bench field conventions)."""
from __future__ import annotations

import numpy as np

from harness.types import PromptEditSample


def pie_sample(name: str = "000000000001", mask: str = "box", size: int = 64, seed: int = 0) -> PromptEditSample:
    """A smooth image with a coloured disc; prompts keep their `[ ]` markers; the mask's 1-pixel border is
    forced to 1 as the PIE-Bench decoder does (`mask="full"`/`"empty"` give the evaluator's nan cases)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.3 + 0.4 * xs, 0.5 + 0.2 * ys, 0.6 - 0.3 * xs * ys], axis=-1)
    disc = (xs - 0.5) ** 2 + (ys - 0.55) ** 2 < 0.06
    image[disc] = (0.85, 0.2, 0.15)
    image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)
    m = np.zeros((size, size), bool)
    if mask == "box":
        m[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
        m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
    elif mask == "full":
        m[:] = True
    return PromptEditSample(sample_id=f"pie_test/1_change_object/{name}", image=(image * 255).astype(np.uint8),
                            source_prompt="a red [ball] on a table", target_prompt="a red [apple] on a table",
                            blended_words=("ball", "apple"), mask=m, instruction="change the ball to an apple",
                            edit_type=1, edit_type_name="change_object",
                            category="1_change_object")
