"""Model provider: resolves `model` configs into diffusers/transformers components, once per process.

Real weights: `hub.py` (where they come from, removed repositories), `weights.py` (the weights lock),
`export.py`, and `python -m harness.models list|fetch|lock|export` (`__main__.py`)."""
from harness.models.provider import DiffusionModels, ModelSpec, load_models

__all__ = ["DiffusionModels", "ModelSpec", "load_models"]
