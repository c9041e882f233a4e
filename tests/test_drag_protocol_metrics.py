"""The 2024–25 drag metrics (protocols_2025.md §6) against independent computations on known inputs:
DAI against a literal loop of GoodDrag's released formula, PSNR against torchmetrics, LPIPS against the lpips
network on the ground-truth pair, CLIP/MSE by hand, m-MD against DragLoRA's candidate list, DINOv2 MD against
RegionDrag's evaluator written out, and every new id through `python -m harness.metrics compute`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from harness.metrics.base import MetricContext
from harness.metrics.dai import dai_image
from harness.registry import METRICS
from harness.types import DragSample
from tests.test_md import FakeModels, ShiftEquivariant, shifted_pair


def image(h=48, w=64, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def sample(source, handles=((20, 20),), targets=((26, 22),), truth=None, mask=None):
    mask = np.ones(source.shape[:2], bool) if mask is None else mask
    return DragSample("t/c/s", source, "a cat", np.array(handles, float), np.array(targets, float), mask,
                      ground_truth=truth)


FEATURES = {"lpips_backbone": "random", "seed": 42, "clip_vit_b32": "random_tiny", "dinov2_base": "random_tiny"}
SHARED = MetricContext(FEATURES, device="cpu")  # networks built once for the module


def metric(metric_id, **features):
    context = MetricContext({**FEATURES, **features}, device="cpu") if features else SHARED
    return METRICS.get(metric_id)(context)


# --- DAI (GoodDrag compute_DAI.py) ------------------------------------------------------------------

def released_dai(original, result, points, radius):
    """GoodDrag's `compute_dai` written out as released: ToTensor, Python slicing, ÷N, ÷(2r+1)², ÷N."""
    from torchvision import transforms

    to_tensor = transforms.ToTensor()
    original = to_tensor(original).permute(1, 2, 0).numpy()
    result = to_tensor(result).permute(1, 2, 0).numpy()
    dai = 0
    for (sx, sy), (tx, ty) in points:
        a = original[sy - radius:sy + radius + 1, sx - radius:sx + radius + 1]
        b = result[ty - radius:ty + radius + 1, tx - radius:tx + radius + 1]
        dai += np.sum(np.square(a - b))
    dai /= len(points)
    dai /= (1 + 2 * radius) ** 2
    return dai / len(points)


@pytest.mark.parametrize("radius", [1, 5, 10, 20])
def test_dai_matches_the_released_loop_and_divides_by_n_twice(radius):
    src, out = image(96, 80, 0), image(96, 80, 1)
    # the third pair sits at the top-left corner: both windows start at negative indices and wrap (empty
    # windows for r > 3), as the released slicing does
    handles, targets = [(30, 40), (50, 60), (2, 3)], [(36, 44), (45, 52), (3, 2)]
    expected = released_dai(src, out, list(zip(handles, targets)), radius)
    s = sample(src, handles, targets)
    got = metric(f"dai_r{radius}@gooddrag").compute(s, out, {}).value
    assert got == float(expected)  # bit for bit: the same float32 buffer layout and summation order
    assert metric(f"dai_r{radius}@paper").compute(s, out, {}).value == pytest.approx(3 * float(expected), rel=1e-6)


def test_dai_wraparound_window_and_border_switch():
    src, out = image(64, 64, 0), image(64, 64, 1)
    h, t = np.array([[2.0, 2.0]]), np.array([[3.0, 2.0]])
    # r = 5: rows -3..7 → slice [-3:8] is empty on a 64-row image; both windows are empty, the term is 0
    assert dai_image(src, out, h, t, 5, True) == 0.0
    assert dai_image(src, out, h, t, 5, True, border="clamp") > 0
    # clamp equals an edge-padded image read with ordinary windows
    pad_a, pad_b = np.pad(src, ((5, 5), (5, 5), (0, 0)), mode="edge"), np.pad(out, ((5, 5), (5, 5), (0, 0)), mode="edge")
    a = pad_a[2:13, 2:13].astype(np.float32) / 255
    b = pad_b[2:13, 3:14].astype(np.float32) / 255
    assert dai_image(src, out, h, t, 5, False, border="clamp") == pytest.approx(float(np.sum((a - b) ** 2) / 121), rel=1e-6)
    # one window wraps to empty, the other is full: the released script raises; the metric says why it is undefined
    s = sample(src, [(30, 2)], [(30, 30)])
    value = metric("dai_r5@gooddrag").compute(s, out, {})
    assert np.isnan(value.value) and "released compute_DAI.py raises" in value.info["nan"]
    assert np.isfinite(metric("dai_r5@gooddrag", dai_border="clamp").compute(s, out, {}).value)
    with pytest.raises(ValueError, match="dai_border"):
        metric("dai_r5@gooddrag", dai_border="wrap").compute(s, out, {})


# --- ground truth (VFD-Bench reconstruction, drag-back) ---------------------------------------------

def test_psnr_gt_matches_torchmetrics_and_needs_a_truth():
    from torchmetrics.image import PeakSignalNoiseRatio

    src, truth, out = image(seed=0), image(seed=1), image(seed=2)
    expected = PeakSignalNoiseRatio(data_range=255.0)(torch.from_numpy(out).double(), torch.from_numpy(truth).double())
    assert metric("psnr_gt@vfd").compute(sample(src, truth=truth), out, {}).value == pytest.approx(float(expected), rel=1e-7)  # torchmetrics state is float32
    no_truth = metric("psnr_gt@vfd").compute(sample(src), out, {})
    assert np.isnan(no_truth.value) and "no ground-truth" in no_truth.info["nan"]
    same = metric("psnr_gt@vfd").compute(sample(src, truth=truth), truth, {})
    assert np.isnan(same.value) and "infinite" in same.info["nan"]


def test_lpips_gt_is_lpips_of_the_truth_pair():
    from harness.metrics.features import build_lpips_alex

    src, truth, out = image(seed=0), image(seed=1), image(seed=2)
    net, _ = build_lpips_alex("random")

    def lpips_of(a, b):
        x, y = [F.interpolate(torch.from_numpy(i.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1, (224, 224),
                              mode="bilinear") for i in (a, b)]
        with torch.no_grad():
            return float(net(x, y))

    expected = lpips_of(truth, out)
    assert expected != pytest.approx(lpips_of(src, out), rel=1e-3)
    s = sample(src, truth=truth)
    for protocol in ("vfd", "draglora"):
        assert metric(f"lpips_alex_gt@{protocol}").compute(s, out, {}).value == pytest.approx(expected, rel=1e-5)
        assert metric(f"if_gt@{protocol}").compute(s, out, {}).value == pytest.approx(1 - expected, rel=1e-5)


def test_clip_gt_and_mse_gt_by_hand():
    from torchvision import transforms as T

    from harness.metrics.clip_vit import CLIP_MEAN, CLIP_STD, build_clip_vit_b32

    src, truth, out = image(seed=0), image(seed=1), image(seed=2)
    model, _ = build_clip_vit_b32("random_tiny", seed=42)  # the context seed
    prep = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(CLIP_MEAN, CLIP_STD)])
    with torch.no_grad():
        emb = model(pixel_values=torch.stack([prep(Image.fromarray(i)) for i in (truth, out)])).image_embeds
    expected = float(F.cosine_similarity(emb[:1], emb[1:]))
    s = sample(src, truth=truth)
    assert metric("clip_gt@vfd").compute(s, out, {}).value == pytest.approx(expected, abs=1e-5)
    assert metric("clip_gt@draglora").compute(s, truth, {}).value == pytest.approx(1.0, abs=1e-5)
    mse = torch.nn.MSELoss()(torch.from_numpy(truth).float() / 127.5 - 1, torch.from_numpy(out).float() / 127.5 - 1)
    assert metric("mse_gt@draglora").compute(s, out, {}).value == pytest.approx(float(mse), rel=1e-6)


# --- m-MD (DragLoRA) and md_dift@inpaint4drag ------------------------------------------------------

def with_fake_dift(m):
    m.context._cache[("dift", m.dift_dtype, False)] = ShiftEquivariant(FakeModels())
    return m


def test_masked_md_matches_draglora_candidate_list():
    source, edited = shifted_pair(h=96, w=96, k=(5, 3))
    handles, targets = np.array([[30.0, 40.0], [60.0, 20.0]]), np.array([[35.0, 43.0], [65.0, 23.0]])
    mask = np.zeros((96, 96), bool)
    mask[10:38, 10:50] = True  # the first true match (35, 43) is outside: the masked argmax must land elsewhere
    s = sample(source, handles, targets, mask=mask)
    md = with_fake_dift(metric("md_dift@dragdiffusion")).compute(s, edited, {})
    mmd = with_fake_dift(metric("md_dift_masked@draglora")).compute(s, edited, {})
    assert md.value == pytest.approx(0.0)
    # DragLoRA: candidate_coords = (row, col) of mask == 1 in raster order; cosine; argmax over the list
    fake = ShiftEquivariant(FakeModels())
    feats = fake(torch.cat([torch.from_numpy(i.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
                            for i in (source, edited)]), "", "sample", None)
    rows, cols = np.nonzero(mask)
    dists = []
    for (hx, hy), (tx, ty) in zip(handles.astype(int), targets.astype(int)):
        cos = F.cosine_similarity(feats[0, :, hy, hx][:, None], feats[1][:, rows, cols], dim=0)
        best = int(cos.argmax())
        dists.append(np.hypot(ty - rows[best], tx - cols[best]))
    assert mmd.value == pytest.approx(float(np.mean(dists)), rel=1e-6) and mmd.value > 0
    assert mmd.weight == 2


def test_inpaint4drag_md_is_regiondrag_with_an_empty_prompt():
    seen = []

    class Recording(ShiftEquivariant):
        def __call__(self, image, prompt, latent, generator):
            seen.append(prompt)
            return super().__call__(image, prompt, latent, generator)

    source, edited = shifted_pair(k=(5, 3))
    s = sample(source, [(30, 40)], [(34, 44)])
    values = []
    for metric_id in ("md_dift@regiondrag", "md_dift@inpaint4drag"):
        m = metric(metric_id)
        m.context._cache[("dift", m.dift_dtype, False)] = Recording(FakeModels())
        values.append(m.compute(s, edited, {}).value)
    assert seen == ["a cat", ""] and values[0] == values[1]  # the fake ignores the prompt: same math otherwise


# --- DINOv2 MD (RegionDrag evaluator, method='dino') -------------------------------------------------

def test_md_dino_matches_regiondrag_evaluator_written_out():
    m = metric("md_dino@regiondrag")
    model, identity, _ = m.network()
    assert identity == "random_tiny:dinov2-base-arch:seed0"
    src, out = image(50, 40, 0), image(50, 40, 1)
    s = sample(src, [(10, 12), (30, 40)], [(14, 15), (25, 44)])

    def featmap(img):  # evaluator.encode_image(method='dino') after preprocess + nearest 840
        x = torch.from_numpy(img.astype(np.float32)) / 127.5 - 1
        x = F.interpolate(x.permute(2, 0, 1)[None], size=(840, 840))
        with torch.no_grad():
            f = model(x).last_hidden_state[:, 1:, :].permute(0, 2, 1).reshape(1, -1, 60, 60)
        return F.interpolate(f, size=(50, 40))

    fs, ft = featmap(src), featmap(out)
    src_kps, trg_kps = torch.tensor([[10, 12], [30, 40]]), torch.tensor([[14, 15], [25, 44]])
    radius = ((src_kps - trg_kps).float().norm(dim=1) / 2 ** 0.5).clamp(min=5)
    ys, xs = torch.meshgrid(torch.arange(50), torch.arange(40), indexing="ij")
    dist = []
    for i in range(2):
        mask = (((xs - src_kps[i, 0]) ** 2 + (ys - src_kps[i, 1]) ** 2).sqrt() < radius[i]) | \
               (((xs - trg_kps[i, 0]) ** 2 + (ys - trg_kps[i, 1]) ** 2).sqrt() < radius[i])
        q = F.normalize(fs[0, :, src_kps[i, 1], src_kps[i, 0]], dim=0)
        sim = (q[:, None, None] * F.normalize(ft[0], dim=0)).sum(0)
        best = int(torch.where(mask, sim, torch.tensor(-torch.inf)).flatten().argmax())
        d = (trg_kps[i].float() - torch.tensor([best % 40, best // 40]).float()) / torch.tensor([40.0, 50.0])
        dist.append(float(d.norm()))
    got = m.compute(s, out, {})
    assert got.value == pytest.approx(float(np.mean(dist)), rel=1e-5)
    assert m.settings()["features"].startswith("last_hidden_state patch tokens 60x60")


# --- the metrics CLI scores every new id ---------------------------------------------------------

NEW_IDS = ["psnr_gt@vfd", "lpips_alex_gt@vfd", "if_gt@vfd", "clip_gt@vfd", "lpips_alex_gt@draglora", "if_gt@draglora",
           "clip_gt@draglora", "mse_gt@draglora", "dai_r1@gooddrag", "dai_r5@paper", "md_dino@regiondrag",
           "md_dift_masked@draglora", "md_dift@inpaint4drag"]


def test_metrics_cli_scores_every_new_id(tmp_path, capsys):
    from harness.metrics.__main__ import main

    paths = {}
    for name, seed in (("source", 0), ("edited", 1), ("truth", 2)):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(image(32, 40, seed)).save(paths[name])
    mask = np.zeros((32, 40), np.uint8)
    mask[4:28, 4:36] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["--source", str(paths["source"]), "--edited", str(paths["edited"]), "--points", "[[10, 10], [14, 12]]",
              "features=smoke", "device=cpu"]
    for metric_id in NEW_IDS:
        args = ["compute", metric_id, *common, "--ground-truth", str(paths["truth"]), "--mask", str(tmp_path / "mask.png")]
        assert main(args) == 0, metric_id
        out = json.loads(capsys.readouterr().out)
        assert out["metric"] == metric_id and np.isfinite(out["value"]), out
    assert main(["compute", "psnr_gt@vfd", *common]) == 2
    assert "psnr_gt@vfd needs --ground-truth G.png" in capsys.readouterr().err
    assert main(["compute", "md_dift_masked@draglora", *common]) == 2
    assert "needs --mask M.png" in capsys.readouterr().err


def test_inpaint4drag_spec_holds_the_published_rows():
    from harness.paths import PROJECT_ROOT
    from harness.report.spec import load_spec

    spec = load_spec(PROJECT_ROOT / "reports" / "inpaint4drag_table.yaml")
    published = {r.label: r.published for r in spec.rows}
    md = published["Inpaint4Drag"]["dragbench_sr"]["md_dift@inpaint4drag"]
    assert md.value == 3.6 and md.unverified
    assert published["DragDiffusion"]["dragbench_dr"]["lpips_alex@regiondrag"].value == 10.2
    assert {m.id for m in spec.metrics} <= set(METRICS.names())
