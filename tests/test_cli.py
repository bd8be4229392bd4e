"""Whole runs of `python run.py` in subprocesses: files, manifest, raw arrays, determinism, failures."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import run_cli

from pipeline.output.manifest import read_lines as read_manifest

TINY = ["models=[alexnet]", "weights=none", "layers=[first,last]", "feature_maps.top_k=8", "predictions=true"]
ALL_METHODS = "methods=[filters,feature_maps,guided_backprop,gradient,deconvnet]"


def pngs(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")}


@pytest.mark.slow
def test_a_run_writes_pictures_raw_arrays_and_a_manifest_and_is_reproducible(tmp_path, photo_dir):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = run_cli([*TINY, ALL_METHODS, f"images=[{photo_dir}]", "save_raw=true", f"hydra.run.dir={out}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(out)
    out = runs[0]
    records = read_manifest(out / "manifest.jsonl")
    # 2 filter grids + 2 layers x 2 images x 4 per-image methods
    assert len(records) == 2 + 2 * 2 * 4
    assert {r["status"] for r in records} == {"ok"}
    for r in records:
        assert (out / r["png"]).is_file() and (out / r["raw"]).is_file()
        assert r["weights"] == "random init (seed 0)" and r["random_weights"] is True
        raw = np.load(out / r["raw"])
        assert raw.dtype == np.float32
        if r["method"] in ("guided_backprop", "gradient", "deconvnet"):
            assert raw.shape == (len(r["targets"]), 3, *r["input_size"]) == (8, 3, 224, 224)
            assert {"channel", "objective", "unit", "value"} <= set(r["targets"][0])
            assert "ReLU" in r["params"]["activation_policy"]
        elif r["method"] == "feature_maps":
            assert raw.shape[0] == len(r["channels"]) == 8
    assert {r["png"] for r in records} == set(pngs(out))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["exit_code"] == 0
    assert run["counts"] == {"planned": 18, "skipped": 0, "ok": 18, "failed": 0, "remaining": 0}
    assert set(run["predictions"]["alexnet"]) == {"synthetic_0", "synthetic_1"}
    assert len(run["predictions"]["alexnet"]["synthetic_0"]) == 5
    assert run["config"]["models"] == ["alexnet"] and "torch" in run["versions"]
    assert (out / "config.resolved.yaml").is_file() and (out / "run.log").is_file()
    assert pngs(runs[0]) == pngs(runs[1])  # same config, same bytes


@pytest.mark.slow
def test_a_corrupt_image_fails_only_its_own_artefacts(tmp_path, photo_dir):
    good = (photo_dir / "synthetic_0.png").read_bytes()
    (photo_dir / "broken.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    proc = run_cli(
        [*TINY, "methods=[filters,feature_maps,guided_backprop]", f"images=[{photo_dir}]", f"hydra.run.dir={out}"],
        tmp_path,
    )
    assert proc.returncode == 1
    assert "error: 4 of 14 artefacts failed" in proc.stderr and "Traceback" not in proc.stderr
    records = read_manifest(out / "manifest.jsonl")
    failed = [r for r in records if r["status"] == "failed"]
    assert len(records) == 14 and len(failed) == 4
    assert {r["image_label"] for r in failed} == {"broken"}
    assert all("image failed to load" in r["error"] for r in failed)
    assert all((out / r["png"]).is_file() for r in records if r["status"] == "ok")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (
            ["models=[resnet19]"],
            "error: models: 'resnet19' is not a torchvision classification model. Closest valid: resnet18",
        ),
        (
            ["models=[alexnet]", "weights=none", "layers=[features.1]"],
            "error: layers: 'features.1' is not a conv layer of alexnet",
        ),
        (["models=[alexnet]", "weights=none", "images=[nowhere/*.jpg]"], "error: images: 'nowhere/*.jpg'"),
        (["png_compression=99"], "error: png_compression: 99 is above the maximum 9."),
        (["feature_maps.top_k=abc"], "error: feature_maps.top_k: 'abc' is not an integer."),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path, args, fragment):
    proc = run_cli([*args, f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists()  # failed before any work


def test_list_layers_prints_names_and_output_shapes(tmp_path):
    proc = run_cli(["models=[resnet18]", "list_layers=true", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resnet18: 20 conv layers" in proc.stdout
    assert "layer4.1.conv2" in proc.stdout and "512×7×7" in proc.stdout


@pytest.mark.slow
def test_the_default_job_runs_offline_on_real_weights_and_photos(tmp_path):
    out = tmp_path / "default"
    proc = run_cli(["layers=[first]", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["predictions"]["efficientnet_lite0"]["grace_hopper"][0]["class_name"] == "academic gown"
    records = read_manifest(out / "manifest.jsonl")
    assert {r["method"] for r in records} == {
        "filters",
        "feature_maps",
        "guided_backprop",
        "gradient",
        "deconvnet",
        "grad_cam",
        "guided_grad_cam",
        "overview",
    }
    assert all(r["random_weights"] is False for r in records)


def test_help_explains_every_key_and_method_from_where_they_are_defined(compose_cfg):
    from pipeline.config import KEY_HELP, SCALARS
    from pipeline.methods import registry

    cfg = compose_cfg(["plugins=[toy_method]", "feature_maps.top_k=16", "methods=[grad_cam]"], hydra_config=True)
    text = cfg.hydra.help.template  # what Hydra prints for --help, after it undoes the doubled $
    assert set(SCALARS) <= set(KEY_HELP)  # every checked scalar key is explained
    for key, meaning in KEY_HELP.items():
        assert meaning in text
        assert re.search(rf"^  {re.escape(key)}\s+= ", text, re.M) or f"  {key}\n" in text, key
    assert "  models              = [efficientnet_lite0]" in text  # values from conf/config.yaml
    for name in registry.names():  # every method, the plugin's too, in the registry's order
        assert re.search(rf"^  {name}\s", text, re.M), name
    assert text.index("\n  filters ") < text.index("\n  feature_maps ") < text.index("\n  toy_energy ")
    assert re.search(r"^  grad_cam .*\[on\]$", text, re.M) and not re.search(r"^  filters .*\[on\]$", text, re.M)
    assert "      top_k=16 " in text and "channels shown, strongest first (0: all); 0 or more" in text
    assert "      power=2 " in text and "1 to 4" in text  # the plugin's Params metadata
    assert "one of mean, max" in text and "Examples" in text


@pytest.mark.slow
def test_help_and_cfg_on_the_command_line(tmp_path):
    shown = run_cli(["--help"], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("Filter-Map-Insights: see inside an ImageNet CNN")
    assert "Powered by Hydra" not in shown.stdout and "== Config ==" not in shown.stdout
    assert "memory_budget       = 0.6" in shown.stdout and "guided_grad_cam" in shown.stdout
    config = run_cli(["--cfg", "job"], cwd=tmp_path)
    assert config.returncode == 0 and "feature_maps:\n  tile_px: 96" in config.stdout
    assert list(tmp_path.iterdir()) == []  # neither writes an output folder
