"""Random-weight Qwen2.5-VL judges for tests and throughput measurements (no weights, no hub).

- `random_tiny`: the Qwen2.5-VL architecture (windowed vision transformer with 14-pixel patches and 2×2
  merging, M-RoPE text decoder) at tiny widths, with a byte-level BPE tokenizer trained offline with the
  `tokenizers` library on the judge templates, and the real processor classes (`Qwen2VLImageProcessor`,
  `Qwen2_5_VLProcessor`) with a small pixel budget. Its answers are noise: runs that use it are smoke runs.
- `random_7b`: Qwen2.5-VL-7B-Instruct's exact dimensions (config.json of the hub checkpoint: 28 decoder
  layers of width 3584, 4 key/value heads, MLP 18944, vocabulary 152064; a 32-block vision tower of width
  1280 with full attention in blocks 7, 15, 23, 31), built directly on the device in bf16. For timing only.

Both are seeded; their identity names them `random…`, which makes the report flag the run as a smoke run.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
# the Qwen2.5-VL chat layout (user turn: text, then one vision block per image), without the hub's template
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                 "{% if c['type'] == 'text' %}{{ c['text'] }}{% else %}<|vision_start|><|image_pad|><|vision_end|>"
                 "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")

QWEN25VL_7B_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                                            "rope_theta": 1e6})
QWEN25VL_7B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                          fullatt_block_indexes=[7, 15, 23, 31], window_size=112, tokens_per_second=2)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=8192,
                 rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6})
TINY_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                   fullatt_block_indexes=[1], window_size=112)
ARCHITECTURES = {"random_tiny": (TINY_TEXT, TINY_VISION), "random_7b": (QWEN25VL_7B_TEXT, QWEN25VL_7B_VISION)}
# tiny pixel budget: a 512² image becomes 4×4 merged tokens
TINY_PIXELS = {"min_pixels": 28 * 28 * 4, "max_pixels": 112 * 112}


@lru_cache(maxsize=None)
def tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained here on the judge templates (every byte is encodable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from harness.judges.templates import TEMPLATE_DIR

    corpus = [p.read_text(encoding="utf-8") for p in sorted(TEMPLATE_DIR.glob("*.txt"))]
    corpus.append('{"score": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "reasoning": "..."} {"A": 7, "B": 3}')
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def processor(pixels: dict[str, int] | None = None):
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**(pixels or {})), tokenizer=tokenizer(),
                               video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)


def config(arch: str):
    from transformers import Qwen2_5_VLConfig

    text, vision = ARCHITECTURES[arch]
    tok = tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(text, vocab_size=max(int(text.get("vocab_size", 0)), len(tok)), bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                            video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                            vision_end_token_id=ids["<|vision_end|>"])


@lru_cache(maxsize=2)
def build(arch: str, seed: int = 0, device: str | torch.device = "cpu",
          dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model, processor) of a random judge, built on `device` in `dtype` (no float32 copy on the host).
    Cached per process: inference leaves it unchanged, and tests build several judges on it."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from harness.determinism import seeded_global_rng

    cfg = config(arch)
    default = torch.get_default_dtype()
    with seeded_global_rng(seed), torch.device(device):
        torch.set_default_dtype(dtype)
        try:
            model = Qwen2_5_VLForConditionalGeneration(cfg)
        finally:
            torch.set_default_dtype(default)
    model.generation_config.pad_token_id = cfg.text_config.pad_token_id
    return model.eval(), processor(TINY_PIXELS if arch == "random_tiny" else None)


def identity_name(arch: str, seed: int) -> str:
    return f"{arch}:qwen2.5-vl-arch:seed{seed}"
