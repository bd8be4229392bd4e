"""The Python door: visualize() returns exactly what the CLI writes, works on a user's own module without
changing it, takes PIL images and preprocessed tensors; sweep() runs what run.py runs; _target_ models in the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import fingerprint
from PIL import Image
from torch import nn
from torchvision import transforms

from pipeline import sweep, visualize
from pipeline.errors import UserError

TINY = dict(layers=["first", "last"], weights="none", feature_maps={"top_k": 4}, guided_backprop={"top_k": 2})
METHODS = ["filters", "feature_maps", "guided_backprop", "grad_cam", "overview"]


def key(record: dict) -> tuple:
    return (record["model"], record["method"], record["layer"], record["image_label"])


@pytest.mark.slow
def test_visualize_arrays_equal_the_clis_npy_files(tmp_path, photo_dir):
    out = tmp_path / "cli"
    proc = run_cli(
        [
            "models=[alexnet]",
            "weights=none",
            "layers=[first,last]",
            f"images=[{photo_dir}]",
            "save_raw=true",
            f"methods=[{','.join(METHODS)}]",
            "feature_maps.top_k=4",
            "guided_backprop.top_k=2",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli = {key(r): r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    ours = {key(a.record): a for a in visualize("alexnet", images=photo_dir, methods=METHODS, **TINY)}
    assert ours.keys() == cli.keys() and len(ours) == 2 + 2 * 2 * 3 + 2
    for k, artefact in ours.items():
        np.testing.assert_array_equal(artefact.array, np.load(out / cli[k]["raw"]), err_msg=str(k))
        assert artefact.record["png"] == cli[k]["png"] and artefact.ok
    # and the picture is the CLI's PNG, pixel for pixel
    one = ours[("alexnet", "feature_maps", "features.0", "synthetic_0")]
    assert np.array_equal(np.asarray(one.image), np.asarray(Image.open(out / one.record["png"]).convert("RGB")))
    assert one._repr_png_().startswith(b"\x89PNG")


def test_visualize_with_out_writes_the_clis_files(tmp_path, photo_dir):
    artefacts = list(visualize("alexnet", images=photo_dir, methods=["feature_maps"], out=tmp_path / "o", **TINY))
    lines = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert {key(r) for r in lines} == {key(a.record) for a in artefacts} and len(lines) == 4
    assert all((tmp_path / "o" / r["png"]).is_file() for r in lines)
    assert json.loads((tmp_path / "o" / "run.json").read_text())["counts"]["ok"] == 4


class Mine(nn.Module):
    """A user's module: two convs, batch norm, dropout, in training mode when handed over."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.conv = nn.Conv2d(6, 5, 3, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))

    def forward(self, x):
        return self.head(torch.relu(self.conv(self.drop(torch.relu(self.norm(self.stem(x)))))))


def test_a_users_module_gives_feature_maps_equal_to_its_own_forward_and_is_left_unchanged(photo_dir):
    torch.manual_seed(0)
    model = Mine()
    model.norm.running_mean.uniform_(-0.5, 0.5)
    model.train()  # as a user might leave it
    before = fingerprint(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prep = transforms.Compose(
        [
            transforms.Resize(40),
            transforms.CenterCrop(32),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
        ]
    )
    picture = Image.open(photo_dir / "synthetic_1.png")
    artefacts = list(
        visualize(
            model,
            layers="all",
            images=[picture],
            transform=prep,
            methods=["feature_maps", "grad_cam"],
            feature_maps={"channels": [4, 0, 2]},
            name="mine",
        )
    )
    assert fingerprint(model) == before and model.training and model.drop.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN statistics untouched
    seen = {}
    handles = [
        m.register_forward_hook(lambda mod, a, o, n=n: seen.__setitem__(n, o.clone()) or None)
        for n, m in (("stem", model.stem), ("conv", model.conv))
    ]
    model.eval()
    with torch.no_grad():
        model(prep(picture.convert("RGB"))[None])
    for h in handles:
        h.remove()
    maps = {a.record["layer"]: a for a in artefacts if a.record["method"] == "feature_maps"}
    assert set(maps) == {"stem", "conv"}
    for layer, artefact in maps.items():
        assert artefact.record["image_label"] == "image_0" and artefact.record["model"] == "mine"
        np.testing.assert_allclose(artefact.array, seen[layer][0, [4, 0, 2]].numpy(), rtol=1e-5, atol=1e-6)
    cams = [a for a in artefacts if a.record["method"] == "grad_cam"]
    assert all("class_name" not in t for a in cams for t in a.record["targets"])  # 4 classes: no ImageNet names


def test_preprocessed_tensors_give_what_the_pil_route_gives(photo_dir):
    torch.manual_seed(1)
    model = Mine().eval()
    prep = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()])
    pictures = [Image.open(p) for p in sorted(photo_dir.glob("*.png"))]
    via_pil = list(visualize(model, images=pictures, transform=prep, methods=["feature_maps"]))
    batch = torch.stack([prep(p.convert("RGB")) for p in pictures])
    via_tensor = list(visualize(model, images=batch, methods=["feature_maps"]))
    assert len(via_pil) == len(via_tensor) == 4
    for a, b in zip(via_pil, via_tensor, strict=True):
        assert a.record["layer"] == b.record["layer"]
        np.testing.assert_array_equal(a.array, b.array)


def test_nothing_is_downloaded_unless_asked():
    with pytest.raises(UserError, match="download=True"):
        list(visualize("squeezenet1_1", images="samples", methods=["filters"]))
    with pytest.raises(UserError, match=r"feature_maps\.top_k: 'x' is not an integer"):
        list(visualize("alexnet", weights="none", images="samples", feature_maps={"top_k": "x"}))


def test_sweep_runs_what_run_py_runs(tmp_path, photo_dir):
    result = sweep(
        [
            "models=[alexnet]",
            "weights=none",
            "layers=[first]",
            "methods=[filters,feature_maps]",
            f"images=[{photo_dir}]",
            f"hydra.run.dir={tmp_path / 'swept'}",
        ]
    )
    assert result.exit_code == 0 and result.folder == tmp_path / "swept"
    assert result.summary["counts"] == {"planned": 3, "ok": 3, "failed": 0} | {
        k: v for k, v in result.summary["counts"].items() if k not in ("planned", "ok", "failed")
    }
    assert (result.folder / "index.html").is_file() and (result.folder / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_a_target_model_sweeps_from_the_cli_with_its_checkpoint_and_preprocessing(tmp_path, photo_dir):
    from my_nets import build

    torch.manual_seed(2)
    checkpoint = tmp_path / "mine.pth"
    torch.save(build(num_classes=10).state_dict(), checkpoint)
    out = tmp_path / "run"
    mine = f"{{_target_:tests.my_nets.build,name:mynet,num_classes:10,weights:'{checkpoint}',preprocess:{{resize:72,crop:64}}}}"
    imagenet = "{_target_:tests.my_nets.build,name:wide,num_classes:1000}"
    proc = run_cli(
        [
            f"models=[{mine},{imagenet}]",
            f"images=[{photo_dir}]",
            "methods=[filters,feature_maps,grad_cam]",
            "save_raw=true",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["status"] for r in lines} == {"ok"} and {r["model"] for r in lines} == {"mynet", "wide"}
    stem = next(r for r in lines if r["model"] == "mynet" and r["method"] == "filters" and r["layer"] == "body.0")
    saved = torch.load(checkpoint, weights_only=True)["body.0.weight"].numpy()
    np.testing.assert_array_equal(np.load(out / stem["raw"]), saved)  # the checkpoint's weights, not an init
    maps = next(r for r in lines if r["model"] == "mynet" and r["method"] == "feature_maps" and r["layer"] == "body.0")
    assert maps["shape"] == [8, 32, 32] and stem["weights"] == "checkpoint mine.pth"  # 64 px crop, stride 2
    run = json.loads((out / "run.json").read_text())
    assert "mynet" not in run["predictions"]  # 10 classes: no ImageNet predictions
    assert run["predictions"]["wide"]["synthetic_0"][0]["class_name"] != "0"  # 1000 classes: ImageNet's names
    assert (out / "index.html").is_file()


def test_bad_target_models_are_refused_in_one_line(compose_cfg):
    from pipeline.config import settings_from

    for override, fragment in [
        ("models=[{name:x}]", "models[0]: a model given as a mapping needs _target_"),
        ("models=[{_target_:tests.my_nets.build,preprocess:{crop:0}}]", "preprocess.crop: 0 is not a positive integer"),
        (
            "models=[{_target_:tests.my_nets.build,weights:/no/such.pth}]",
            "checkpoint file '/no/such.pth' does not exist",
        ),
    ]:
        with pytest.raises(UserError) as err:
            settings_from(compose_cfg([override]))
        assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_the_readme_api_example_works_as_pasted(tmp_path, monkeypatch):
    import re

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```python\n(from pipeline import visualize\n.*?)```", readme, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})  # the README's own example
    assert sorted(p.name for p in tmp_path.glob("grad_cam_*.png"))  # one picture per sample photo
