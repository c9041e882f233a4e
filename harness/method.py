"""The method-adapter contract.

A method is a class registered in `harness.registry.METHODS` with a typed `Config` dataclass (defaults
from the paper; "as released" switches where code and paper differ), `setup(models)` called once per
process, and `edit(sample, seed) -> EditResult` called per sample. The harness times `edit` (device
synchronised), records peak memory, and stores the image and record.

A method that can edit several equal-size samples in one pass says how many through `max_batch()` and
implements `edit_batch`; the edit stage then hands it runs of same-size samples. Batching changes rounding
(other kernel tilings at another batch size), so the setting that enables it belongs in the store key.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from harness.types import EditResult, Family, Sample


@dataclasses.dataclass
class NoConfig:
    """For methods without knobs."""


class EditMethod:
    name: ClassVar[str] = ""
    families: ClassVar[tuple[Family, ...]] = ("drag",)
    needs_model: ClassVar[bool] = True
    Config: ClassVar[type] = NoConfig
    # Config fields that change speed but never the output (e.g. CUDA graphs): left out of the store key.
    runtime_fields: ClassVar[tuple[str, ...]] = ()
    # Config fields added after stores existed whose default reproduces the earlier output: left out of the
    # store key at their default, so the keys of earlier runs stay valid.
    key_omits_default: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        self.config = config
        self.models = None

    @classmethod
    def build(cls, params: Mapping[str, Any]) -> "EditMethod":
        """Instantiate from a config mapping; unknown keys are an error naming the method and the key."""
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise ValueError(f"method {cls.name!r}: unknown config field(s) {unknown}; valid fields: {sorted(fields)}")
        return cls(cls.Config(**params))

    @classmethod
    def for_model(cls, params: Mapping[str, Any], model: Any) -> tuple[dict[str, Any], str | None]:
        """The config this method runs with on `model` (a `ModelSpec`), resolved when the run is planned so
        that it is part of the store key, and an optional line for the run output saying what changed. The
        default changes nothing; the LoRA drag methods pick their LoRA profile here."""
        return dict(params), None

    def setup(self, models: Any) -> None:
        self.models = models

    def require_pipeline(self, models: Any, pipeline: type, needs: str, choices: str) -> None:
        """Refuse a base model whose diffusers pipeline is not `pipeline` (a method built for a 9-channel
        inpainting UNet or an MM-DiT cannot run on another), naming the method, what it `needs`, the model
        configs that provide it (`choices`) and what was given."""
        if not isinstance(models.pipe, pipeline):
            raise TypeError(f"{self.name} needs {needs} ({choices}), got {models.spec.identity} "
                            f"({type(models.pipe).__name__})")

    def edit(self, sample: Sample, seed: int) -> EditResult:  # pragma: no cover - interface
        raise NotImplementedError

    def components(self) -> tuple[str, ...]:
        """The add-on components (conf/component/<name>.yaml, harness/models/components.py) this configured
        method loads: their identities join the store key (harness/planning.py) and their real weights the
        weights lock. The default loads none."""
        return ()

    def max_batch(self) -> int:
        """How many equal-size samples `edit_batch` takes at once (1: no batching)."""
        return 1

    def edit_batch(self, samples: list[Sample], seed: int) -> list[EditResult]:
        """Edit equal-size samples together; each result must not depend on which others share its batch
        beyond rounding. The default edits them one by one."""
        return [self.edit(sample, seed) for sample in samples]

    def describe(self) -> dict[str, Any]:
        """Everything about this method that changes its output: the key of its run-store folder."""
        defaults = {f.name: f.default for f in dataclasses.fields(self.config)}
        config = {k: v for k, v in dataclasses.asdict(self.config).items()
                  if k not in self.runtime_fields and not (k in self.key_omits_default and v == defaults[k])}
        return {"method": self.name, "config": config}
