"""Model provider: resolves `model` configs into diffusers/transformers components, once per process."""
from harness.models.provider import DiffusionModels, ModelSpec, load_models

__all__ = ["DiffusionModels", "ModelSpec", "load_models"]
