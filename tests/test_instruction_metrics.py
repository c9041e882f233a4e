"""The instruction-editing metrics (@magicbrush, @emu_edit) on tiny random networks: each value recomputed
from its definition in MagicBrush's `image_eval.py` / InstructPix2Pix's directional similarity, the reference
image each protocol uses, and the undefined cases."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import distance

from harness.metrics import instruct_networks as nets
from harness.metrics.base import MetricContext
from harness.metrics.clip_vit import clip_preprocess, shared_clip_vit_b32
from harness.models.sources import feature_used
from harness.registry import METRICS
from tests.pie_fixtures import pie_sample

pytestmark = pytest.mark.usefixtures("one_thread_module")
IDS = ["l1@magicbrush", "l2@magicbrush", "clip_i@magicbrush", "dino@magicbrush", "clip_t@magicbrush",
       "l1@emu_edit", "clip_i@emu_edit", "dino@emu_edit", "clip_out@emu_edit", "clip_dir@emu_edit"]


@pytest.fixture(scope="module")
def ctx():
    return MetricContext({"clip_vit_b32": "random_tiny", "dino_vits16": "random_tiny"}, device="cpu")


@pytest.fixture(scope="module")
def triple():
    """(sample with a target image, edited image)."""
    sample = pie_sample(size=64)
    target = np.ascontiguousarray(np.roll(sample.image, 7, axis=1))
    edited = np.ascontiguousarray(sample.image[::-1])
    return dataclasses.replace(sample, ground_truth=target), edited


def score(ctx, metric_id, sample, edited):
    return METRICS.get(metric_id)(ctx).compute(sample, edited, {})


def _clip_image(ctx, image):  # the reference: model.encode_image(preprocess(PIL)).float()
    model = shared_clip_vit_b32(ctx).model
    with torch.no_grad():
        return model(pixel_values=clip_preprocess()(Image.fromarray(image))[None]).image_embeds[0].float().numpy()


def test_magicbrush_scores_against_the_target_and_emu_edit_against_the_source(ctx, triple):
    sample, edited = triple
    from torchvision.transforms.functional import to_tensor  # the reference's transforms.ToTensor()
    for metric_id, reference in (("l1@magicbrush", sample.ground_truth), ("l1@emu_edit", sample.image)):
        value = score(ctx, metric_id, sample, edited)
        assert value.value == pytest.approx(float(torch.nn.L1Loss()(to_tensor(Image.fromarray(edited)), to_tensor(Image.fromarray(reference)))), abs=0)
    assert score(ctx, "l2@magicbrush", sample, edited).value == pytest.approx(
        float(torch.nn.MSELoss()(to_tensor(Image.fromarray(edited)), to_tensor(Image.fromarray(sample.ground_truth)))), abs=0)
    clip_i = score(ctx, "clip_i@magicbrush", sample, edited)
    expected = 1 - distance.cosine(_clip_image(ctx, edited), _clip_image(ctx, sample.ground_truth))
    assert clip_i.value == pytest.approx(expected, abs=1e-12) and clip_i.info == {"against": "target"}
    emu = score(ctx, "clip_i@emu_edit", sample, edited)
    assert emu.value == pytest.approx(1 - distance.cosine(_clip_image(ctx, edited), _clip_image(ctx, sample.image)), abs=1e-12)
    assert emu.info == {"against": "source"}


def test_without_a_target_magicbrush_falls_back_to_the_source(ctx, triple):
    sample, edited = triple
    plain = dataclasses.replace(sample, ground_truth=None)
    for quantity in ("l1", "clip_i", "dino"):
        mb, emu = score(ctx, f"{quantity}@magicbrush", plain, edited), score(ctx, f"{quantity}@emu_edit", plain, edited)
        assert mb.value == emu.value and mb.info == {"against": "source"}


def test_dino_is_the_class_token_of_dino_preprocessing(ctx, triple):
    sample, edited = triple
    model, identity = nets.dino(ctx)
    assert "dino-vits16" in identity

    def embed(image):
        with torch.no_grad():  # torch.hub's dino_vits16 forward: the normed class token
            return model(pixel_values=nets.dino_preprocess()(Image.fromarray(image))[None]).last_hidden_state[0, 0].numpy()

    expected = 1 - distance.cosine(embed(edited), embed(sample.ground_truth))
    assert score(ctx, "dino@magicbrush", sample, edited).value == pytest.approx(expected, abs=1e-12)


def test_clip_text_and_direction(ctx, triple):
    sample, edited = triple
    out = nets.clip_text_embedding(ctx, "a red apple on a table")
    assert score(ctx, "clip_t@magicbrush", sample, edited).value == pytest.approx(
        1 - distance.cosine(_clip_image(ctx, edited), out), abs=1e-12)
    assert score(ctx, "clip_out@emu_edit", sample, edited).value == score(ctx, "clip_t@magicbrush", sample, edited).value
    inp = nets.clip_text_embedding(ctx, "a red ball on a table")
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    di = unit(_clip_image(ctx, edited)) - unit(_clip_image(ctx, sample.image))
    dt = unit(out) - unit(inp)
    expected = float(di @ dt / np.linalg.norm(di) / np.linalg.norm(dt))
    assert score(ctx, "clip_dir@emu_edit", sample, edited).value == pytest.approx(expected, abs=1e-6)  # float32


def test_undefined_captions_are_nan_with_a_reason(ctx, triple):
    sample, edited = triple
    none = dataclasses.replace(sample, source_prompt="", target_prompt="")
    assert "no output caption" in score(ctx, "clip_t@magicbrush", none, edited).info["nan"]
    assert "input and an output caption" in score(ctx, "clip_dir@emu_edit", none, edited).info["nan"]
    long = dataclasses.replace(sample, target_prompt=" ".join(["apple"] * 90))
    value = score(ctx, "clip_out@emu_edit", long, edited)
    assert np.isnan(value.value) and "77 tokens" in value.info["nan"]


def test_metadata_states_networks_and_references(ctx):
    for metric_id in IDS:
        settings = METRICS.get(metric_id)(ctx).settings()
        assert ("MagicBrush" in settings["protocol"]) == metric_id.endswith("@magicbrush") or "Emu" in settings["protocol"]
        if metric_id.startswith("clip"):
            assert "clip-vit-b32" in settings["network"]
    assert feature_used("dino_vits16", ["dino@emu_edit"]) and not feature_used("dino_vits16", ["clip_i@emu_edit"])
    assert feature_used("clip_vit_b32", ["clip_dir@emu_edit"])
