"""`identity`: returns the input unchanged — the floor of every distortion metric, the ceiling of MD."""
from __future__ import annotations

from harness.method import EditMethod
from harness.registry import METHODS
from harness.types import EditResult, Sample


@METHODS.register("identity")
class Identity(EditMethod):
    name = "identity"
    needs_model = False
    families = ("drag", "prompt", "exemplar")

    def edit(self, sample: Sample, seed: int) -> EditResult:
        return EditResult(image=sample.image.copy())
