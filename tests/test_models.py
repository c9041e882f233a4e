"""Model provider: offline tokenizer ids, tiny architectures' structure, scheduler timesteps."""
from __future__ import annotations

import pytest
import torch

from harness.diffusion.attention import transformer_blocks
from harness.models.provider import ModelSpec
from harness.models.tokenizer import clip_tokenizer

VECTORS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "Apollo sculpture statue ancient Greek God of sun and poetry":
        [49406, 11554, 8757, 8222, 5810, 6842, 1731, 539, 2176, 537, 6038, 49407],
    "A slanted [rusty] mountain bicycle on the road, 4K!":
        [49406, 320, 44663, 775, 314, 22646, 316, 3965, 11652, 525, 518, 1759, 267, 275, 330, 256, 49407],
    "café naïve — 東京": [49406, 15304, 1097, 35689, 563, 2005, 48338, 21078, 361, 49407],
}


@pytest.mark.parametrize("text,ids", VECTORS.items())
def test_tokenizer_matches_clip_ids(text, ids):
    assert clip_tokenizer()(text).input_ids == ids


def test_tokenizer_padding_sd1_vs_sd2():
    sd1 = clip_tokenizer()("a photo of a cat", padding="max_length", max_length=77).input_ids
    sd2 = clip_tokenizer("!")("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(sd1) == len(sd2) == 77
    assert sd1[-1] == 49407 and sd2[-1] == 0


def test_tiny_structure(tiny_models):
    unet = tiny_models.unet
    assert len(transformer_blocks(unet)) == 16
    assert [type(c).__name__ for c in unet.children()][4] == "ModuleList"
    latent = torch.zeros(1, 4, 48, 64)
    feats = {}
    hooks = [unet.up_blocks[i].register_forward_hook(lambda m, i_, o, k=i: feats.__setitem__(k, o.shape)) for i in (1, 2)]
    hooks.append(unet.mid_block.register_forward_hook(lambda m, i_, o: feats.__setitem__("mid", o.shape)))
    with torch.no_grad():
        unet(latent, 10, encoder_hidden_states=torch.zeros(1, 77, 32))
    for h in hooks:
        h.remove()
    assert feats["mid"][-2:] == (6, 8) and feats[1][-2:] == (24, 32) and feats[2][-2:] == (48, 64)
    assert tiny_models.pipe.vae_scale_factor == 8


def test_random_scheduler_gives_regiondrag_linspace_timesteps(tiny_models):
    from diffusers import DPMSolverMultistepScheduler

    s = DPMSolverMultistepScheduler.from_config(tiny_models.scheduler_config)
    s.set_timesteps(20)
    assert s.timesteps.tolist() == [999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 500, 450, 400, 350, 300, 250, 200, 150, 100, 50]


def test_same_seed_same_weights():
    from harness.models.provider import build_random_pipeline

    a = build_random_pipeline("tiny", 3).unet.conv_in.weight
    b = build_random_pipeline("tiny", 3).unet.conv_in.weight
    c = build_random_pipeline("tiny", 4).unet.conv_in.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_model_spec_errors_name_the_field():
    with pytest.raises(ValueError, match="'source'"):
        ModelSpec.from_config({"name": "x", "source": "hub"})
    with pytest.raises(ValueError, match="'path'"):
        ModelSpec.from_config({"name": "x", "source": "pretrained"})
    assert ModelSpec.from_config({"name": "x", "source": "pretrained", "path": "a/b"}).identity == "pretrained:a/b"


def test_saved_random_pipeline_reloads_offline(tmp_path, tiny_models):
    """The `pretrained` path (real users' weights) works offline from a local directory."""
    from harness.models import load_models

    tiny_models.pipe.save_pretrained(tmp_path / "tiny")
    reloaded = load_models({"name": "local", "source": "pretrained", "path": str(tmp_path / "tiny"),
                            "local_files_only": True, "device": "cpu"})
    assert torch.equal(reloaded.unet.conv_in.weight, tiny_models.unet.conv_in.weight)
