"""Per-layer methods that gather over every image batch and finish with the model (``Method.gathers``): the same
result in any batch size, every image seen again on resume, and a truncated differentiable forward that reads
each conv's own output and leaves the model as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import fingerprint
from torch import nn

from pipeline.engine.finish import Finish
from pipeline.methods.base import ModelInfo
from pipeline.models.layers import conv_layers


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _run(tmp_path: Path, out: Path, photo_dir: Path, *extra: str):
    proc = run_cli(
        [
            "models=[alexnet]",
            "weights=none",
            "layers=[first,last]",
            f"images=[{photo_dir}]",
            "plugins=[tests.toy_gather]",
            "methods=[toy_peak,feature_maps]",
            "save_raw=true",
            "predictions=false",
            f"hydra.run.dir={out}",
            *extra,
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["layer"]: r for r in _records(out) if r["method"] == "toy_peak" and r["status"] == "ok"}


@pytest.mark.slow
def test_a_gathering_method_sees_every_image_in_any_batch_size_and_on_resume(tmp_path, photo_dir):
    one = _run(tmp_path, tmp_path / "one", photo_dir, "batch_size=1")
    together = _run(tmp_path, tmp_path / "together", photo_dir, "batch_size=2")
    assert set(one) == set(together) == {"features.0", "features.10"}
    for layer, record in one.items():
        assert record["seen"] == together[layer]["seen"] == 2
        np.testing.assert_array_equal(
            np.load(tmp_path / "one" / record["raw"]), np.load(tmp_path / "together" / together[layer]["raw"])
        )
    # independent: each channel's peak over both photos, from a plain hook on the conv (cloned before the ReLU)
    from pipeline.images import load_image
    from pipeline.models import load_model, resolve_weights

    loaded = load_model("alexnet", resolve_weights("alexnet", "none", seed=0))
    seen = []
    handle = loaded.module.features[10].register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    with torch.no_grad():
        for path in sorted(photo_dir.iterdir()):
            loaded.module(loaded.transform(load_image(path))[None])
    handle.remove()
    expected = torch.cat(seen).amax(dim=(0, 2, 3)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "one" / one["features.10"]["raw"]), expected, rtol=1e-5)
    # resume: a gathering artefact that went missing is made again from every image, nothing else is redone
    (tmp_path / "one" / one["features.10"]["png"]).unlink()
    again = _run(tmp_path, tmp_path / "one", photo_dir, "batch_size=1")
    assert again["features.10"]["seen"] == 2
    run = json.loads((tmp_path / "one" / "run.json").read_text())
    planned = 2 + 2 * 2  # toy_peak per layer, feature_maps per layer and photo
    assert run["counts"]["ok"] == 1 and run["counts"]["skipped"] == planned - 1


def test_finish_features_are_each_convs_own_output_with_the_graph_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3), nn.ReLU(inplace=True)).eval()
    model.requires_grad_(False)
    before = fingerprint(model)
    layers = conv_layers(model)
    view = Finish(model, ModelInfo("t", (), (0.0,) * 3, (1.0,) * 3), layers, {}, 0, 12)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    found = view.features(x, ["0", "2"])
    conv0 = model[0](x)
    torch.testing.assert_close(found["0"], conv0)  # before the in-place ReLU that follows
    assert (found["0"] < 0).any()
    torch.testing.assert_close(found["2"], model[2](torch.relu(conv0)))
    # the gradient of an objective on the shallow layer equals plain autograd on an independent forward
    (grad,) = torch.autograd.grad(found["0"][:, 1].mean(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model[0](x2)[:, 1].mean(), x2)
    torch.testing.assert_close(grad, expected)
    assert fingerprint(model) == before
    # the forward stops after the deepest requested layer
    calls = []
    handle = model[2].register_forward_hook(lambda *a: calls.append(1))
    view.features(x, ["0"])
    handle.remove()
    assert calls == []


@pytest.mark.slow
def test_overview_of_a_sweep_shows_the_gathered_tiles_made_before_it(tmp_path: Path, photo_dir: Path):
    """Through the CLI: the gathering method finishes before the per-image pass, so the overview (a reader of
    other outputs) carries its tiles; a rerun after the overview is lost makes it again, the same."""
    out = tmp_path / "run"
    args = ["methods=[top_patches,overview]", "batch_size=1", "top_patches.k=2", "plugins=[]"]
    _run(tmp_path, out, photo_dir, *args)
    records = _records(out)
    order = [r["method"] for r in records]
    assert order.index("overview") > max(i for i, m in enumerate(order) if m == "top_patches")
    overviews = [r for r in records if r["method"] == "overview"]
    assert overviews and all(r["under_rows"] == ["top_patches"] for r in overviews)
    first = overviews[0]
    png = out / first["png"]
    before = png.read_bytes()
    png.unlink()
    _run(tmp_path, out, photo_dir, *args)
    assert png.read_bytes() == before
