"""PIE-Bench metrics against independent computations on synthetic images: hand-computed masked PSNR/MSE,
torchmetrics' own classes (the ones the benchmark instantiates), torchmetrics' LPIPS-squeeze and CLIPScore
with the same weights, and the reference's fused-qkv DINO self-similarity; plus the "nan" cases."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness.metrics import pie_networks
from harness.metrics.base import MetricContext
from harness.pipeline import leaderboard
from harness.registry import METRICS
from harness.types import PromptEditSample

FEATURES = {"dino_vitb8": "random_tiny", "clip_vitl14": "random_tiny", "lpips_squeeze_backbone": "random"}


@pytest.fixture(scope="module")
def context():
    return MetricContext(FEATURES, device="cpu")


def make_sample(mask: np.ndarray | None, seed: int = 0) -> tuple[PromptEditSample, np.ndarray]:
    rng = np.random.default_rng(seed)
    source = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    edited = np.clip(source.astype(int) + rng.integers(-40, 41, source.shape), 0, 255).astype(np.uint8)
    sample = PromptEditSample("pie_test/1_change_object/000000000001", source, "a red [ball] on a table",
                              "a red [apple] on a table", ("ball", "apple"), mask, 1)
    return sample, edited


def box_mask() -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[16:40, 8:48] = True
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def value(context, metric_id: str, sample, edited) -> float:
    return METRICS.get(metric_id)(context).compute(sample, edited, {}).value


def masked(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255 * keep[:, :, None]


@pytest.mark.parametrize("part", ["unedit", "edit"])
def test_psnr_and_mse_by_hand(context, part):
    sample, edited = make_sample(box_mask())
    keep = ~sample.mask if part == "unedit" else sample.mask
    mse = np.mean((masked(sample.image, keep) - masked(edited, keep)) ** 2)  # over the full image, zeros included
    assert value(context, f"pie_mse_{part}_part", sample, edited) == pytest.approx(mse, rel=1e-5)
    assert value(context, f"pie_psnr_{part}_part", sample, edited) == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)


def reference_tensors(sample, edited, keep):
    """The reference's preprocessing: /255, × mask, (1, 3, H, W)."""
    to = lambda im: torch.tensor(masked(im, keep), dtype=torch.float32).permute(2, 0, 1).unsqueeze(0)
    return to(sample.image), to(edited)


def test_psnr_mse_ssim_match_the_torchmetrics_classes(context):
    from torchmetrics import MeanSquaredError
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    sample, edited = make_sample(box_mask(), seed=1)
    a, b = reference_tensors(sample, edited, ~sample.mask)
    assert value(context, "pie_psnr_unedit_part", sample, edited) == pytest.approx(
        PeakSignalNoiseRatio(data_range=1.0)(a, b).item(), rel=1e-6)
    assert value(context, "pie_mse_unedit_part", sample, edited) == pytest.approx(
        MeanSquaredError()(a[0].contiguous(), b[0].contiguous()).item(), rel=1e-6)
    assert value(context, "pie_ssim_unedit_part", sample, edited) == pytest.approx(
        StructuralSimilarityIndexMeasure(data_range=1.0)(a, b).item(), rel=1e-6)


def test_lpips_squeeze_matches_torchmetrics_with_the_same_backbone(context):
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    sample, edited = make_sample(box_mask(), seed=2)
    ours, _ = pie_networks.lpips_squeeze(context)
    theirs = _NoTrainLpips(net="squeeze", pnet_rand=True)  # torchmetrics' own network and LPIPS heads
    backbone = {k.split(".", 1)[1]: v for k, v in ours.net.state_dict().items()}  # "<index>.…" keys
    for i, block in enumerate(theirs.net.slices):
        block.load_state_dict({k: backbone[k] for k in block.state_dict()}, strict=True)
    a, b = reference_tensors(sample, edited, ~sample.mask)
    expected = theirs(a * 2 - 1, b * 2 - 1).item()
    assert value(context, "pie_lpips_unedit_part", sample, edited) == pytest.approx(expected, rel=1e-5)


def test_squeezenet_features_file_loads_into_lpips(tmp_path):
    import torchvision

    features = torchvision.models.squeezenet1_1(weights=None).features
    path = tmp_path / "squeezenet1_1_features.pth"
    torch.save(features.state_dict(), path)
    model, identity = pie_networks.build_lpips_squeeze(str(path))
    assert identity.startswith("lpips-0.1:squeeze:file-sha256:")
    assert torch.equal(model.net.slice2[1].squeeze.weight, features[3].squeeze.weight)
    torch.save({"bogus.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="squeezenet1_1"):
        pie_networks.build_lpips_squeeze(str(path))


def reference_structure_distance(model, source: np.ndarray, edited: np.ndarray) -> float:
    """PnPInversion's LossG path: torchvision Compose(Resize(224, max_size=480), Normalize) on 0–255 tensors,
    DINO's fused qkv of the last block, keys taken from it per head and concatenated, cosine self-similarity."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(224, max_size=480),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    attention = model.layers[-1].attention
    qkv = torch.nn.Linear(attention.q_proj.in_features, 3 * attention.q_proj.out_features)
    qkv.weight.data = torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
    qkv.bias.data = torch.cat([attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias])
    heads = model.config.num_attention_heads

    def self_similarity(image):
        x = transform(torch.from_numpy(np.transpose(image.astype(np.float32), (2, 0, 1))))
        captured = []
        hook = model.layers[-1].layernorm_before.register_forward_hook(lambda m, i, o: captured.append(o))
        with torch.no_grad():
            model(pixel_values=x[None])
        hook.remove()
        fused = qkv(captured[0])[0]  # (tokens, 3·hidden)
        tokens = fused.shape[0]
        keys = fused.reshape(tokens, 3, heads, -1).permute(1, 2, 0, 3)[1]  # (heads, tokens, d)
        keys = keys.transpose(0, 1).reshape(tokens, -1)
        norm = keys.norm(dim=1, keepdim=True)
        return (keys @ keys.t()) / torch.clamp(norm @ norm.t(), min=1e-8)

    return F.mse_loss(self_similarity(edited), self_similarity(source)).item()


def test_structure_distance_matches_the_reference_formulation(context):
    sample, edited = make_sample(box_mask(), seed=3)
    model, identity = pie_networks.dino(context)
    assert identity.startswith("random_tiny")
    expected = reference_structure_distance(model, sample.image, edited)
    assert value(context, "pie_structure_distance", sample, edited) == pytest.approx(expected, rel=1e-4)
    assert value(context, "pie_structure_distance", sample, sample.image) == 0.0
    settings = METRICS.get("pie_structure_distance")(context).settings()
    assert "0-255" in settings["input_scale"]


class _TensorFeatures(torch.nn.Module):
    """torchmetrics 1.9 expects tensors from get_*_features; transformers 5 returns output objects."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def test_clip_scores_match_torchmetrics_clipscore(context):
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPProcessor

    model, tokenizer, image_processor, _ = pie_networks.clip(context)
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    metric = CLIPScore(model_name_or_path=lambda: (_TensorFeatures(model), processor))
    sample, edited = make_sample(box_mask(), seed=4)

    def torchmetrics_score(image, text):
        metric.reset()
        return metric(torch.from_numpy(image.copy()).permute(2, 0, 1), text).item()

    masked_edit = np.uint8(edited * np.repeat(sample.mask[:, :, None], 3, axis=2).astype(np.float64))
    cases = {"pie_clip_similarity_target_image": (edited, "a red apple on a table"),
             "pie_clip_similarity_target_image_edit_part": (masked_edit, "a red apple on a table"),
             "pie_clip_similarity_source_image": (sample.image, "a red ball on a table")}
    for metric_id, (image, text) in cases.items():
        assert value(context, metric_id, sample, edited) == pytest.approx(torchmetrics_score(image, text), abs=1e-4)


def test_clip_score_is_clamped_at_zero(context, monkeypatch):
    from harness.metrics import pie_bench

    sample, edited = make_sample(box_mask())
    model = pie_networks.clip(context)[0]
    monkeypatch.setattr(model.visual_projection.weight, "data", -model.visual_projection.weight.data)
    scores = [pie_bench.clip_score(context, edited, text) for text in ("a", "a red apple", "a table")]
    assert min(scores) == 0.0 and all(s >= 0 for s in scores)  # the flipped projection makes cosines negative


def test_nan_for_full_and_empty_masks(context):
    full, edited = make_sample(np.ones((64, 64), bool))
    for metric_id in ("pie_psnr_unedit_part", "pie_lpips_unedit_part", "pie_mse_unedit_part", "pie_ssim_unedit_part"):
        result = METRICS.get(metric_id)(context).compute(full, edited, {})
        assert np.isnan(result.value) and "full" in result.info["nan"]
    assert not np.isnan(value(context, "pie_psnr_edit_part", full, edited))
    empty, edited = make_sample(np.zeros((64, 64), bool))
    for metric_id in ("pie_psnr_edit_part", "pie_ssim_edit_part", "pie_clip_similarity_target_image_edit_part"):
        assert np.isnan(value(context, metric_id, empty, edited))
    assert not np.isnan(value(context, "pie_mse_unedit_part", empty, edited))
    no_mask, edited = make_sample(None)
    with pytest.raises(ValueError, match="'mask' is missing"):
        value(context, "pie_mse_unedit_part", no_mask, edited)


def test_leaderboard_excludes_undefined_values_and_counts_them():
    rows = [{"dataset": "d", "method": "m", "method_key": "m-1", "sample_id": f"s{i}", "metric": "pie_psnr_unedit_part",
             "value": v, "weight": 1.0, "status": s}
            for i, (v, s) in enumerate([(20.0, "ok"), (np.nan, "undefined"), (30.0, "ok"), (np.nan, "metric_failed")])]
    board = leaderboard(pd.DataFrame(rows), ["pie_psnr_unedit_part"]).iloc[0]
    assert board["pie_psnr_unedit_part"] == 25.0 and board["nan"] == 1 and board["n"] == 4


def test_metric_ids_scales_and_families():
    scales = {"pie_structure_distance": 1e3, "pie_psnr_unedit_part": 1, "pie_lpips_unedit_part": 1e3,
              "pie_mse_unedit_part": 1e4, "pie_ssim_unedit_part": 1e2, "pie_clip_similarity_target_image": 1,
              "pie_clip_similarity_target_image_edit_part": 1, "pie_clip_similarity_source_image": 1,
              "pie_psnr_edit_part": 1, "pie_lpips_edit_part": 1e3, "pie_mse_edit_part": 1e4, "pie_ssim_edit_part": 1e2}
    for metric_id, scale in scales.items():
        cls = METRICS.get(metric_id)
        assert cls.id == metric_id and cls.table_scale == scale and cls.families == ("prompt",)
    better = {"pie_structure_distance": False, "pie_psnr_unedit_part": True, "pie_lpips_unedit_part": False,
              "pie_mse_unedit_part": False, "pie_ssim_unedit_part": True, "pie_clip_similarity_target_image": True}
    assert {m: METRICS.get(m).higher_is_better for m in better} == better


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from harness.metrics.__main__ import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_scores_a_pie_pair_with_a_png_or_rle_mask(tmp_path, capsys, context):
    from PIL import Image

    sample, edited = make_sample(box_mask())
    for name, array in (("source.png", sample.image), ("edited.png", edited)):
        Image.fromarray(array).save(tmp_path / name)
    Image.fromarray(sample.mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    pair = ["--source", str(tmp_path / "source.png"), "--edited", str(tmp_path / "edited.png")]
    code, out, _ = run_cli(capsys, "compute", "pie_psnr_unedit_part", *pair, "--mask", str(tmp_path / "mask.png"),
                           "features=smoke")
    assert code == 0
    result = json.loads(out)
    assert result["metric"] == "pie_psnr_unedit_part"
    assert result["value"] == pytest.approx(value(context, "pie_psnr_unedit_part", sample, edited), rel=1e-6)
    code, out, _ = run_cli(capsys, "compute", "pie_clip_similarity_target_image_edit_part", *pair,
                           "--mask", str(tmp_path / "mask.png"), "features=smoke", "prompt=a red [ball] on a table",
                           "target_prompt=a red [apple] on a table")
    assert code == 0 and json.loads(out)["value"] == pytest.approx(
        value(context, "pie_clip_similarity_target_image_edit_part", sample, edited), rel=1e-5)
    # a PIE-Bench RLE (a mapping_file.json entry) decodes on 512×512 with the border forced to 1
    big = np.zeros((512, 512, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    (tmp_path / "entry.json").write_text(json.dumps({"mask": [512 * 100 + 100, 50]}))
    code, out, _ = run_cli(capsys, "compute", "pie_mse_edit_part", "--source", str(tmp_path / "big.png"),
                           "--edited", str(tmp_path / "big.png"), "--mask", str(tmp_path / "entry.json"), "features=smoke")
    assert code == 0 and json.loads(out)["value"] == 0.0


@pytest.mark.parametrize("metric, extra, message", [
    ("pie_psnr_unedit_part", [], "pie_psnr_unedit_part needs --mask"),
    ("pie_clip_similarity_target_image", [], "needs target_prompt="),
    ("pie_clip_similarity_target_image_edit_part", [], "needs --mask M.png and target_prompt="),
    ("pie_clip_similarity_source_image", ["target_prompt=x"], "needs prompt="),
    ("pie_mse_unedit_part", ["--mask", "{tmp}/edited.json"], "outside the 512x512 image"),
    ("pie_mse_unedit_part", ["--mask", "{tmp}/small.png"], "--mask is 8x8, the source image 64x64"),
])
def test_cli_names_the_missing_or_bad_input(tmp_path, capsys, metric, extra, message):
    from PIL import Image

    sample, edited = make_sample(box_mask())
    Image.fromarray(sample.image).save(tmp_path / "source.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "edited.json").write_text(json.dumps([10 ** 7, 3]))
    extra = [e.format(tmp=tmp_path) for e in extra]
    code, _, err = run_cli(capsys, "compute", metric, "--source", str(tmp_path / "source.png"),
                           "--edited", str(tmp_path / "source.png"), "features=smoke", *extra)
    assert code == 2 and message in err
