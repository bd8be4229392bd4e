"""The overview: rows spread evenly in depth, strongest maps and statistics equal to an independent computation,
one GIF frame per layer on a shared palette, a stats plot, flat memory; and feature maps placed on the picture."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import run_methods
from PIL import Image
from torch import nn

from pipeline.methods import base
from pipeline.methods.overview import shrink_peaks, spread
from pipeline.render.animation import gif_bytes
from pipeline.render.figures import draw, upsample
from pipeline.render.normalize import colorize, minmax


def test_rows_are_spread_evenly_and_keep_the_first_and_last_layer():
    assert spread(5, 24) == [0, 1, 2, 3, 4]
    rows = spread(200, 24)
    assert rows[0] == 0 and rows[-1] == 199 and len(rows) == 24
    gaps = np.diff(rows)
    assert gaps.max() - gaps.min() <= 1  # even in depth
    assert spread(3, 2) == [0, 2]


class Deep(nn.Module):
    def __init__(self, depth: int = 6):
        super().__init__()
        layers, channels = [], 3
        for i in range(depth):
            layers += [nn.Conv2d(channels, 4 + i, 3, stride=2 if i % 2 else 1, padding=1), nn.ReLU(inplace=True)]
            channels = 4 + i
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5))

    def forward(self, x):
        return self.head(self.features(x))


def hooked_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every conv's output as it produced it (a copy taken in a plain forward hook)."""
    seen, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(lambda m, a, o, n=name: seen.__setitem__(n, o.clone()) or None))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def test_statistics_and_strongest_maps_equal_a_plain_forward():
    torch.manual_seed(0)
    model = Deep().eval()
    x = torch.randn(2, 3, 32, 32)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    (outputs,) = run_methods(model, x, names, {"overview": {"per_row": 3, "max_rows": 4}}).values()
    plain = hooked_outputs(model, x)
    for i, out in enumerate(outputs):
        assert out.fields["layers"] == names and out.fields["rows"] == [
            "#0 features.0",
            "#2 features.4",
            "#3 features.6",
            "#5 features.10",
        ]
        for row, name in zip(out.array, names, strict=True):
            a = plain[name][i]
            expected = [
                names.index(name),
                a.shape[0],
                a.shape[1],
                a.shape[2],
                a.mean(),
                a.max(),
                (a > 0).float().mean(),
            ]
            np.testing.assert_allclose(row, np.array(expected, dtype=np.float32), rtol=1e-5, atol=1e-6)
        rows = out.picture.rows[1:]  # the first row is the input itself
        for row, name in zip(rows, ["features.0", "features.4", "features.6", "features.10"], strict=True):
            strongest = torch.topk(plain[name][i].flatten(1).mean(1), 3).indices.tolist()
            assert [t.label for t in row.tiles] == [f"ch {c}" for c in strongest]
            np.testing.assert_allclose(row.tiles[0].values, plain[name][i][strongest[0]].numpy(), rtol=1e-5)
        assert len(out.files["gif"].frames) == len(names)  # one frame per requested layer, not capped


def test_it_keeps_only_small_tiles_never_the_activations():
    torch.manual_seed(1)
    model = Deep(depth=4).eval()
    x = torch.randn(1, 3, 96, 96)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    (outputs,) = run_methods(model, x, names, {"overview": {"tile_px": 20, "frame_px": 16, "per_row": 2}}).values()
    out = outputs[0]
    arrays = [t.values for row in out.picture.rows for t in row.tiles if isinstance(t, base.MapTile)]
    arrays += [t.values for f in out.files["gif"].frames for t in f.tiles if isinstance(t, base.MapTile)]
    assert arrays and max(max(a.shape) for a in arrays) <= 20, "96 px maps are kept at tile size"


def test_rows_feature_guided_backprop_and_grad_cam_when_they_ran():
    torch.manual_seed(2)
    model = Deep(depth=3).eval()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    found = run_methods(
        model, torch.randn(1, 3, 16, 16), names, {"overview": {"per_row": 2}, "guided_backprop": {}, "grad_cam": {}}
    )
    (out,) = found[("overview", None)]
    for row in out.picture.rows[1:]:
        kinds = [type(t) for t in row.tiles]
        assert kinds == [base.MapTile, base.MapTile, base.SignalTile, base.OverlayTile]
    assert "guided-backprop" in out.picture.header and "Grad-CAM" in out.picture.header


def test_shrinking_a_sparse_signal_keeps_its_peaks():
    signal = torch.zeros(3, 200, 200)
    signal[0, 13, 17], signal[1, 150, 150] = 2.0, -3.0
    small = shrink_peaks(signal, 50)
    assert small.shape == (3, 50, 50) and small.max() == 2.0 and small.min() == -3.0


def _sub_blocks(data: bytes, at: int) -> int:
    while data[at]:
        at += data[at] + 1
    return at + 1


def gif_color_tables(data: bytes) -> tuple[bool, int]:
    """(whether the GIF has a global colour table, how many frames carry a local one), read from its blocks."""
    assert data[:6] in (b"GIF87a", b"GIF89a")
    packed = data[10]
    at = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    local = 0
    while data[at] != 0x3B:
        if data[at] == 0x21:  # extension: label, then sub-blocks
            at = _sub_blocks(data, at + 2)
        elif data[at] == 0x2C:  # image descriptor, optional local table, LZW code size, sub-blocks
            flags = data[at + 9]
            at += 10
            if flags & 0x80:
                local += 1
                at += 3 * 2 ** ((flags & 7) + 1)
            at = _sub_blocks(data, at + 1)
        else:
            raise AssertionError(f"unexpected GIF block {data[at]:#x} at {at}")
    return bool(packed & 0x80), local


def test_gif_has_one_frame_per_layer_a_shared_palette_and_stays_small_for_200_layers():
    rng = np.random.default_rng(0)
    photo = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    frames = [
        base.Picture(
            [base.ImageTile(photo, "input")]
            + [base.MapTile(rng.random((7 + i % 50, 7 + i % 50)).astype(np.float32), f"ch {c}") for c in range(7)],
            f"#{i} layer{i}.conv · 64×7×7",
            48,
            columns=4,
        )
        for i in range(200)
    ]
    data = gif_bytes(base.Animation(frames, 0.5))
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 200 and gif.info["duration"] == 500 and gif.info["loop"] == 0
    global_table, local_tables = gif_color_tables(data)
    assert global_table and local_tables == 0, "one global palette, no frame brings its own"
    assert len(data) < 6 * 2**20, f"{len(data) / 2**20:.1f} MB for 200 frames of noise"


def test_an_overlay_tile_is_the_bilinear_map_blended_over_the_input():
    source = np.full((8, 8, 3), 200, dtype=np.uint8)
    values = np.array([[0.0, 1.0], [2.0, 4.0]], dtype=np.float32)
    tile = base.OverlayTile(values, source, "m", "gray", 0.25)
    image = np.asarray(draw(base.Picture([tile], tile_px=8), ["h"]))
    t = torch.from_numpy(values)[None, None]
    up = torch.nn.functional.interpolate(t, (8, 8), mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = colorize(minmax(up, 0.0, 4.0), "gray").astype(np.float32)
    expected = np.rint(0.75 * 200 + 0.25 * heat).astype(np.uint8)
    found = np.argwhere((image == expected[0, 0]).all(-1))
    y, x = found[0]
    np.testing.assert_array_equal(image[y : y + 8, x : x + 8], expected)
    np.testing.assert_allclose(upsample(values, 8, 8), up)


def test_feature_maps_overlay_blends_each_map_over_the_input():
    torch.manual_seed(3)
    model = Deep(depth=2).eval()
    found = run_methods(model, torch.randn(1, 3, 16, 16), ["features.2"], {"feature_maps": {"display": "overlay"}})
    (out,) = found[("feature_maps", "features.2")]
    assert all(isinstance(t, base.OverlayTile) for t in out.picture.tiles[1:])
    assert "upsampled over the input" in out.picture.header


@pytest.mark.slow
def test_alexnet_and_resnet18_overviews_and_models_side_by_side(tmp_path, photo_dir):
    from test_report import check_in_browser, screenshot_colours

    folder = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "models=alexnet,resnet18",
            "weights=none",
            "layers=all",
            f"images=[{photo_dir / 'synthetic_0.png'}]",
            "methods=[filters,feature_maps,overview]",
            "feature_maps.top_k=4",
            "predictions=false",
            f"hydra.sweep.dir={folder}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job, (model, layers) in enumerate((("alexnet", 5), ("resnet18", 20))):
        lines = [json.loads(line) for line in (folder / str(job) / "manifest.jsonl").read_text().splitlines()]
        (record,) = [r for r in lines if r["method"] == "overview"]
        assert record["status"] == "ok" and record["model"] == model and record["attached"] == ["gif", "stats"]
        assert Image.open(folder / str(job) / record["gif"]).n_frames == layers  # one frame per conv layer
        assert Image.open(folder / str(job) / record["png"]).height > 5 * 72
        assert Image.open(folder / str(job) / record["stats"]).format == "PNG"
        raw = record["png"].removesuffix(".png")
        assert record["gif"] == f"{raw}.gif" and record["stats"] == f"{raw}.stats.png"
        page = (folder / "report" / "models" / f"{model}.html").read_text(encoding="utf-8")
        assert page.index('id="explorer"') < page.index('id="model"')  # its own place, after the explorer
        assert "stats.png" in page and ".gif" in page
    compare = folder / "compare.html"
    page = compare.read_text(encoding="utf-8")
    assert "compare.html" in (folder / "index.html").read_text(encoding="utf-8")
    assert page.index(">alexnet<") < page.index(">resnet18<")
    for row in ("filters, first conv", "first conv", "25 %", "50 %", "75 %", "last conv"):
        assert row in page
    picks = {  # the conv layers at 0, 25, 50, 75 and 100 % of each model's depth
        "alexnet": ["features.0", "features.3", "features.6", "features.8", "features.10"],
        "resnet18": ["conv1", "layer2.0.conv1", "layer3.0.conv1", "layer3.1.conv2", "layer4.1.conv2"],
    }
    cells = re.findall(r"<code>([^<]*)</code>", page)
    assert cells[:2] == ["features.0", "conv1"]  # the filters row
    assert cells[2:] == [layer for pair in zip(*picks.values(), strict=True) for layer in pair]  # each names its layer
    assert page.count("<svg ") == 2 * 5 * 4  # feature maps: each cell the top 4 maps there are (top_k=4)
    check = check_in_browser(tmp_path, compare)
    assert check["images"] == 2 and check["broken"] == [] and check["natural"] == 2  # the filters; maps are SVG cuts
    assert screenshot_colours(tmp_path, compare) > 3000


def test_compare_page_is_escaped_and_only_for_two_or_more_models(tmp_path):
    from pipeline.report import build_report

    evil = "<script>alert(1)</script>&\"'"

    def job(rel: str, model: str) -> None:
        lines = []
        for index, (method, layer, image) in enumerate(
            [("filters", "conv1", None), ("feature_maps", "conv1", evil), ("feature_maps", "conv2", evil)]
        ):
            png = f"{model}/{method}/{layer}__{index}.png"
            (tmp_path / rel / png).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (index * 80, 40, 40)).save(tmp_path / rel / png)
            lines.append(
                {
                    "model": model,
                    "weights": "w",
                    "random_weights": True,
                    "layer": layer,
                    "layer_index": 0 if layer == "conv1" else 1,
                    "method": method,
                    "image": None if image is None else f"/p/{image}.png",
                    "image_label": image,
                    "params": {},
                    "png": png,
                    "raw": None,
                    "status": "ok",
                    "error": None,
                }
            )
        (tmp_path / rel / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    job("0", "resnet18")
    build_report(tmp_path)
    assert not (tmp_path / "compare.html").exists()  # one model: nothing to compare
    job("1", f"mine{evil}")
    build_report(tmp_path)
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in page
    assert page.count("<img") == 2 * 6


def test_rows_show_feature_viz_and_top_patch_of_each_channel_under_its_map():
    """With the gathering methods in the run, a row's maps are the image's strongest among the channels they show
    (by an independent hook computation), and the sub-rows under it hold exactly their tiles for those channels,
    column by column."""
    torch.manual_seed(0)
    model = Deep(4).eval()
    x = torch.rand(3, 3, 32, 32)
    names = ["features.0", "features.4"]
    found = run_methods(
        model,
        x,
        names,
        {
            "feature_viz": {"steps": 2, "max_channels": 3, "size": 16},
            "top_patches": {"max_channels": 3, "k": 2},
            "overview": {"per_row": 2},
        },
    )
    seen = hooked_outputs(model, x)
    for name in names:
        (fv,) = found[("feature_viz", name)]
        (tp,) = found[("top_patches", name)]
        covered = [int(c) for c in fv.fields["channels"]]
        assert covered == [int(c) for c in tp.fields["channels"]]
        for i, out in enumerate(found[("overview", None)]):
            rows = out.picture.rows
            at = next(j for j, row in enumerate(rows) if row.title[0].endswith(name))
            maps, fv_row, tp_row = rows[at], rows[at + 1], rows[at + 2]
            means = seen[name][i].flatten(1).mean(1)
            expected = sorted(covered, key=lambda c: -float(means[c]))[:2]
            shown = [int(t.label.split()[1]) for t in maps.tiles if isinstance(t, base.MapTile)]
            assert shown == expected
            assert fv_row.title[1] == "(feature_viz)" and tp_row.title[1] == "over the run"
            for col, ch in enumerate(expected):
                assert fv_row.tiles[col] is fv.picture.tiles[covered.index(ch)]
                assert tp_row.tiles[col] is tp.picture.rows[covered.index(ch)].tiles[0]
