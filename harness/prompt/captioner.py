"""BLIP image captions, the base prompt of Pix2Pix-Zero as PnPInversion runs it.

`run_editing_pix2pix_zero.py` captions every source image with LAVIS
`load_model_and_preprocess("blip_caption", "base_coco")` and `generate({"image": …})`; the caption, not the
dataset's source prompt, is what Pix2Pix-Zero inverts with and edits from.

`spec` (method field `captioner`):
- a hub id or local directory of a transformers `BlipForConditionalGeneration` checkpoint; the default
  `Salesforce/blip-image-captioning-base` is BLIP ViT-B (CapFilt-L) fine-tuned for COCO captioning, the
  model LAVIS's `base_coco` names. LAVIS loads its own copy (`blip_coco_caption_base.pth`); that the two
  files hold identical weights was not verified, so captions may differ in rare cases;
- `random`: the BLIP ViT-B architecture with seeded random weights, except the vocabulary (GPU timing);
- `random_tiny`: a few-layer version (CPU tests).
Both random variants use a small offline word list as vocabulary (no BERT vocabulary is available
offline), so their captions are seeded word salad; a random-weight diffusion model always gets one
(`resolve_spec`).

As LAVIS's `BlipCaption.generate` defaults: the prompt "a picture of " (its [CLS] replaced by the decoder's
[DEC] token, [SEP] dropped), beam search with 3 beams, `max_length` 30 and `min_length` 10 tokens (prompt
included), repetition penalty 1, no sampling; the caption is the decoded text without the prompt's
characters. Preprocessing (`blip_image_eval`): PIL resize to 384×384 bicubic, ToTensor, CLIP mean/std.
The model runs in float32, as LAVIS loads it.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from harness.metrics.clip_vit import clip_normalize
from harness.metrics.networks import RANDOM_SPECS, load_network
from harness.paths import cache_dir

log = logging.getLogger(__name__)

PROMPT = "a picture of "
IMAGE_SIZE = 384
GENERATION = dict(num_beams=3, max_length=30, min_length=10, repetition_penalty=1.0, do_sample=False)
RANDOM_SEED = 0
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
WORDS = ("a picture of the an on in with and at near next to is are two three small large red blue green white "
         "black brown yellow cat dog man woman child bird horse car bus bike tree house table chair bed cup ball "
         "apple flower street road field water beach sky mountain room window sitting standing holding").split()
BLIP_BASE_VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=IMAGE_SIZE, patch_size=16)
BLIP_BASE_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      encoder_hidden_size=768)
TINY_VISION = dict(BLIP_BASE_VISION, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, encoder_hidden_size=32)


def resolve_spec(spec: str, models) -> str:
    """`spec`, or for a random-weight diffusion model the random captioner of its size."""
    if not models.is_random or spec in RANDOM_SPECS:
        return spec
    chosen = "random" if models.text_encoder.config.hidden_size == 768 else "random_tiny"
    log.warning("random-weight model: captioner %s instead of %s", chosen, spec)
    return chosen


def offline_tokenizer():
    """A BERT tokenizer over `SPECIALS` + `WORDS` (the random captioners' vocabulary), written to the cache."""
    from transformers import BertTokenizer

    path = cache_dir() / "blip_offline_vocab.txt"
    text = "\n".join(SPECIALS + WORDS) + "\n"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)
    return BertTokenizer(str(path), bos_token="[DEC]")


@lru_cache(maxsize=2)
def build_captioner(spec: str, device: str) -> tuple[torch.nn.Module, object, str]:
    """(`BlipForConditionalGeneration` in eval mode on `device`, tokenizer, identity). Built once per process."""
    from transformers import AutoTokenizer, BlipConfig, BlipForConditionalGeneration

    def random(spec: str) -> tuple[torch.nn.Module, object]:
        tokenizer = offline_tokenizer()
        ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id)
        vision, text = (BLIP_BASE_VISION, BLIP_BASE_TEXT) if spec == "random" else (TINY_VISION, TINY_TEXT)
        return BlipForConditionalGeneration(BlipConfig(vision_config=vision, text_config=dict(text, **ids))), tokenizer

    def pretrained(source: str) -> tuple[torch.nn.Module, object]:
        return BlipForConditionalGeneration.from_pretrained(source), AutoTokenizer.from_pretrained(source)

    model, tokenizer = load_network(spec, "method.pix2pix_zero.captioner", random, pretrained, RANDOM_SEED)
    identity = (f"{spec}:blip-base-arch:offline-vocab:seed{RANDOM_SEED}" if spec in RANDOM_SPECS
                else f"pretrained:{spec}")
    return model.to(device).eval().requires_grad_(False), tokenizer, identity


def preprocess(image: np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 → (1, 3, 384, 384) float32, as LAVIS `blip_image_eval`."""
    resized = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    x = torch.from_numpy(np.array(resized, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    return clip_normalize(x)


@torch.no_grad()
def caption(model: torch.nn.Module, tokenizer, image: np.ndarray) -> str:
    device = next(model.parameters()).device
    prompt = tokenizer(PROMPT, return_tensors="pt").input_ids.to(device)  # [CLS] … [SEP]; generate swaps in [DEC]
    out = model.generate(pixel_values=preprocess(image).to(device), input_ids=prompt, **GENERATION)
    return tokenizer.decode(out[0], skip_special_tokens=True)[len(PROMPT):]
