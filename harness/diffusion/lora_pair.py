"""Two LoRAs on one UNet: a frozen reference and a trainable copy (DragLoRA's `ori_unet` and `model.unet`).

DragLoRA (protocols_2025.md §3) keeps two SD 1.5 UNets in memory: `ori_unet` with the reconstruction LoRA
(RecLoRA) fused, and the drag UNet whose LoRA starts from RecLoRA and is trained online. One UNet with two
peft adapters computes the same thing with one copy of the base weights: the RecLoRA adapter that
`lora.use_lora` attached (or no adapter at all when the LoRA stage is off) plays `ori_unet`, and a second
adapter initialised from the same weights, float32 and trainable, plays the drag UNet. `reference()` and
`trained()` switch between them (peft makes the active adapter's parameters trainable; `trained()`
restores that for the drag adapter only). The fused and unfused forms differ by rounding only.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

from harness.determinism import seeded_global_rng
from harness.diffusion.lora import ADAPTER, _lora_config

TRAINED = "editlab_lora_trained"


class LoraPair:
    def __init__(self, unet, rank: int, seed: int = 0) -> None:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        self.unet = unet
        self.has_reference = ADAPTER in (getattr(unet, "peft_config", None) or {})
        with warnings.catch_warnings(), seeded_global_rng(seed):
            warnings.simplefilter("ignore")  # peft warns whenever a second adapter joins a model
            unet.add_adapter(_lora_config(rank), adapter_name=TRAINED)
        if self.has_reference:
            state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
            set_peft_model_state_dict(unet, {k: v.float() for k, v in state.items()}, adapter_name=TRAINED)
        self.parameters = [p for name, p in unet.named_parameters() if f".{TRAINED}." in name]
        for p in self.parameters:
            p.data = p.data.float()
        self.trained()

    def reference(self) -> None:
        """Route calls through RecLoRA (or the plain UNet when there is none)."""
        if self.has_reference:
            self.unet.set_adapter(ADAPTER)
        else:
            self.unet.disable_adapters()

    def trained(self) -> None:
        """Route calls through the trainable adapter."""
        if not self.has_reference:
            self.unet.enable_adapters()
        self.unet.set_adapter(TRAINED)
        for name, p in self.unet.named_parameters():
            if f".{ADAPTER}." in name:
                p.requires_grad_(False)

    def close(self) -> None:
        """Remove the trainable adapter and leave RecLoRA active and frozen, as `use_lora` attached it."""
        if not self.has_reference:
            self.unet.enable_adapters()
            self.unet.unload_lora()  # restores the plain Linear modules
            return
        self.unet.delete_adapters(TRAINED)
        self.unet.set_adapter(ADAPTER)
        for name, p in self.unet.named_parameters():
            if f".{ADAPTER}." in name:
                p.requires_grad_(False)


@contextlib.contextmanager
def lora_pair(unet, rank: int, seed: int = 0) -> Iterator[LoraPair]:
    """A `LoraPair` for the block; the trainable adapter is removed afterwards (also on errors)."""
    pair = LoraPair(unet, rank, seed)
    try:
        yield pair
    finally:
        pair.close()
