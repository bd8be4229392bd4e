"""feature_viz: the Fourier image and colour decorrelation of Olah et al. 2017, Lucid's transforms, the objective's
gradient against hooks + autograd (in-place ReLU models included), batching independence, reproducible PNGs, the
model left alone, and the natural maxima gathered from the run's images."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import fingerprint, run_methods
from torch import nn

from pipeline.engine.finish import Finish
from pipeline.methods import _optvis as ov
from pipeline.methods.base import ModelInfo
from pipeline.methods.feature_viz import FeatureViz, Params, Sample, objective_values, optimise, to_input
from pipeline.models.layers import conv_layers
from pipeline.render.figures import draw

IMAGENET = ModelInfo("net", (), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(inplace=True), nn.Conv2d(6, 5, 3, stride=2), nn.ReLU(inplace=True)
    ).eval()


def view_of(model: nn.Module, names: list[str] | None = None, side: int = 40, seed: int = 0, states=None) -> Finish:
    layers = [la for la in conv_layers(model) if names is None or la.name in names]
    return Finish(model, IMAGENET, layers, states or {la.name: {} for la in layers}, seed, side)


def test_fourier_image_is_the_inverse_dft_of_the_1_over_f_scaled_spectrum():
    h = w = 8
    rng = np.random.default_rng(0)
    spectrum = rng.normal(size=(1, 3, h, w // 2 + 1, 2)).astype(np.float32)
    ours = ov.fft_image(torch.from_numpy(spectrum), h, w).numpy()
    # the formula: frequency magnitude sqrt(fy² + fx²) in cycles per pixel, amplitude 1 / max(f, 1/max(h, w))
    fy = np.array([k / h if k < h / 2 else (k - h) / h for k in range(h)])[:, None]
    fx = np.array([k / w for k in range(w // 2 + 1)])[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(h, w))
    assert scale[0, 0] == 8 and scale[0, 1] == 8 and scale[4, 4] == pytest.approx(1 / np.sqrt(0.5))
    half = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale
    # the full Hermitian spectrum of a real image, and the orthonormal inverse DFT as a plain sum
    full = np.zeros((1, 3, h, w), complex)
    full[..., : w // 2 + 1] = half
    for k in range(h):
        for j in range(w // 2 + 1, w):
            full[..., k, j] = np.conj(half[..., (-k) % h, w - j])
    for j in (0, w // 2):  # irfft reads only the Hermitian part of the self-conjugate columns
        col = full[..., :, j]
        full[..., :, j] = (col + np.conj(col[..., [(-k) % h for k in range(h)]])) / 2
    m, n = np.arange(h)[:, None], np.arange(w)[None, :]
    expected = np.zeros((1, 3, h, w))
    for k in range(h):
        for j in range(w):
            expected += (full[..., k, j, None, None] * np.exp(2j * np.pi * (k * m / h + j * n / w))).real
    expected /= np.sqrt(h * w) * 4.0  # ortho normalisation, Lucid's divisor 4
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_colour_decorrelation_is_imagenet_colour_correlation_scaled_by_its_largest_column_norm():
    c = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    c = c / max(np.linalg.norm(c[:, j]) for j in range(3))
    x = torch.randn(2, 3, 4, 5)
    ours = ov.decorrelate(x).numpy()
    for b in range(2):
        for i in range(4):
            for j in range(5):
                np.testing.assert_allclose(ours[b, :, i, j], c @ x[b, :, i, j].numpy(), rtol=1e-5, atol=1e-6)
    rgb = ov.to_rgb(torch.zeros(1, 3, 6, 6), "pixel", 6)
    assert torch.equal(rgb, torch.full_like(rgb, 0.5))  # sigmoid of zero: mid gray


def test_transforms_pad_with_gray_jitter_by_whole_pixels_and_plain_is_a_bilinear_resize():
    size = 16
    img = torch.rand(1, 3, size, size)
    plain = ov.resample(img, None, 40)
    torch.testing.assert_close(plain, F.interpolate(img, size=40, mode="bilinear", align_corners=False))
    # scale 1, angle 0, no resize (output side = size + 2·12 − 8 − 4): pad 12 then the two jitter crops
    for u0, u4 in ((0.0, 0.0), (0.6, 0.3)):
        u = torch.tensor([[u0, u0, 0.5, 0.5, u4, u4]], dtype=torch.float64)
        out = ov.resample(img, ov.transform_theta(u, 1, size, size + 12), size + 12)
        padded = F.pad(img, (12, 12, 12, 12), value=0.5)
        o1, o2 = int(8 * u0), int(4 * u4)
        expected = padded[..., o1 + o2 : o1 + o2 + size + 12, o1 + o2 : o1 + o2 + size + 12]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # random draws: a rotation within ±10° times a scale within 0.9–1.1 of the resize
    theta = ov.transform_theta(torch.rand(64, 6, dtype=torch.float64), 64, size, 224).double()
    lin = theta[:, :, :2] / ((size + 12) / size)  # the resize of the unscaled crop
    s = 1 / torch.linalg.det(lin).sqrt()
    assert (s > 0.9 - 0.02).all() and (s < 1.1 + 0.02).all()
    angles = torch.atan2(lin[:, 1, 0], lin[:, 0, 0]).abs()
    assert (angles <= ov.angle_range() + 1e-6).all() and angles.max() > ov.angle_range() / 2


def _independent_rgb(raw: torch.Tensor, size: int) -> torch.Tensor:
    """Fourier image, decorrelation and sigmoid written out from the paper's formulas."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    scale = 1 / torch.maximum(torch.sqrt(fy**2 + fx**2), torch.tensor(1 / size))
    image = torch.fft.irfft2(torch.complex(raw[..., 0], raw[..., 1]) * scale, s=(size, size), norm="ortho") / 4
    c = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    c = c / c.norm(dim=0).max()
    return torch.sigmoid(torch.einsum("ij,bjhw->bihw", c, image))


def _hooked_objective(model, layer, x, channel, objective):
    """The channel objective on a conv's output, captured by a hook that hands on a clone (in-place ReLU)."""
    store = {}

    def hook(module, inputs, output):
        store["a"] = output
        return output.clone()

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        model(x)
    finally:
        handle.remove()
    a = store["a"][:, channel]
    return a.mean(dim=(-2, -1)) if objective == "channel" else a[..., a.shape[-2] // 2, a.shape[-1] // 2]


@pytest.mark.parametrize(
    ("name", "objective"),
    [
        ("tiny", "channel"),
        ("tiny", "neuron"),
        pytest.param("vgg16", "channel", marks=pytest.mark.slow),
        ("resnet18", "neuron"),
        pytest.param("resnet18", "channel", marks=pytest.mark.slow),
    ],
)
def test_objective_gradient_equals_hooks_and_autograd(name, objective):
    model = tiny() if name == "tiny" else getattr(torchvision.models, name)(weights=None).eval()
    layers = conv_layers(model)
    layer = layers[len(layers) // 2].name
    view = view_of(model, [layer], side=64)
    p = Params(objective=objective, size=32, transforms="none")
    torch.manual_seed(1)
    raw = (torch.randn(3, 3, 32, 17, 2) * 0.5).requires_grad_(True)
    samples = [Sample(layer, c, raw[i], raw[i]) for i, c in enumerate((0, 2, 1))]
    x = to_input(raw, p, None, IMAGENET, 64)
    ours = objective_values(view.features(x, [layer]), samples, objective)
    (g_ours,) = torch.autograd.grad(ours.sum(), raw)

    raw2 = raw.detach().clone().requires_grad_(True)
    mean, std = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1), torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    x2 = (F.interpolate(_independent_rgb(raw2, 32), size=64, mode="bilinear", align_corners=False) - mean) / std
    values = [_hooked_objective(model, layer, x2[i : i + 1], c, objective)[0] for i, c in enumerate((0, 2, 1))]
    expected = torch.stack(values)
    (g_expected,) = torch.autograd.grad(expected.sum(), raw2)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert g_expected.abs().sum() > 0
    torch.testing.assert_close(g_ours, g_expected, rtol=1e-3, atol=1e-4 * float(g_expected.abs().max()))


def _samples(view, p, pairs):
    out = []
    for layer, c in pairs:
        gen = ov.generator(view.seed, view.model.name, layer, c, (p.objective, p.param, p.transforms, p.size))
        out.append(Sample(layer, c, ov.initial(gen, p.param, p.size), ov.draws(gen, p.steps)))
    return out


def test_a_channel_optimised_alone_equals_the_same_channel_in_a_batch_of_others():
    model = tiny()
    view = view_of(model)
    p = Params(steps=6, size=24)
    alone_img, alone_val = optimise(view, _samples(view, p, [("2", 3)]), p, lambda: None)
    pairs = [("0", 1), ("0", 4), ("2", 0), ("2", 3), ("2", 1)]  # two layers in one batch, as on a GPU
    batch_img, batch_val = optimise(view, _samples(view, p, pairs), p, lambda: None)
    torch.testing.assert_close(batch_img[3], alone_img[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch_val[3], alone_val[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batch_img[3], batch_img[4])  # different channels, different pictures
    # and through the method: one channel asked for alone gives the picture it has among all of its layer's
    alone = FeatureViz(Params(channels=[3], steps=4, size=24)).finish(view_of(model, ["2"]))
    every = FeatureViz(Params(max_channels=5, steps=4, size=24)).finish(view_of(model, ["0", "2"]))
    np.testing.assert_allclose(alone[0].array[0], every[1].array[3], rtol=1e-4, atol=1e-5)


def _png(output) -> bytes:
    buffer = io.BytesIO()
    draw(output.picture, [output.picture.header]).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_same_seed_same_png_bytes_and_the_model_is_left_alone():
    model = torchvision.models.resnet18(weights=None).eval()  # parameters require grad, as a user's might
    before = fingerprint(model)
    layers = conv_layers(model)
    names = [layers[0].name, layers[5].name]
    p = Params(max_channels=3, steps=3, size=32)
    runs = [FeatureViz(p).finish(view_of(model, names, side=64, seed=s)) for s in (7, 7, 8)]
    assert fingerprint(model) == before
    assert all(param.grad is None for param in model.parameters())  # no weight gradient was even computed
    for a, b, c in zip(*runs, strict=True):
        assert _png(a) == _png(b) and a.fields == b.fields
        assert _png(a) != _png(c)
        assert a.array.shape == (3, 3, 32, 32) and a.array.min() >= 0 and a.array.max() <= 1
        assert [t.label for t in a.picture.tiles] == [
            f"ch {k} · {v:.3g}" for k, v in zip(a.fields["channels"], a.fields["activation"], strict=True)
        ]


@pytest.mark.slow
def test_optimisation_raises_the_objective_and_reports_progress_per_step():
    model = tiny()
    view = view_of(model)
    units = []
    view.on_advance = units.append
    method = FeatureViz(Params(channels=[0, 1, 2], steps=12, size=24))
    outputs = method.finish(view)
    assert sum(units) == method.finish_cost(2) == 24 and len(units) >= 12
    start = FeatureViz(Params(channels=[0, 1, 2], steps=1, lr=1e-6, size=24)).finish(view_of(model))
    for grown, first in zip(outputs, start, strict=True):
        assert np.mean(grown.fields["activation"]) > np.mean(first.fields["activation"])


def test_natural_max_and_active_channels_come_from_the_runs_images():
    model = tiny()
    torch.manual_seed(3)
    x = torch.randn(4, 3, 20, 20)
    found = run_methods(model, x, ["0", "2"], {"feature_viz": {"max_channels": 2, "steps": 2, "size": 16}})
    for name in ("0", "2"):
        (out,) = found[("feature_viz", name)]
        with torch.no_grad():
            a = _hooked_objective(model, name, x, slice(None), "channel")  # [N, C] per image and channel
        order = torch.argsort(a.mean(0), descending=True)[:2].tolist()
        assert out.fields["channels"] == order and out.params["select"] == "active"
        natural = a.amax(0)[order]
        np.testing.assert_allclose(out.fields["natural_max"], natural.numpy(), rtol=1e-5)
        ratio = np.array(out.fields["activation"]) / natural.numpy()
        np.testing.assert_allclose(out.fields["ratio"], ratio, rtol=1e-5)


def test_compare_page_gains_a_row_of_feature_viz_tiles_at_each_depth(tmp_path):
    import json

    from test_report import fake_job

    from pipeline.report import build_report

    for job, model in (("0", "resnet18"), ("1", "alexnet")):
        fake_job(tmp_path / job, model)
        manifest = tmp_path / job / "manifest.jsonl"
        lines = [json.loads(line) for line in manifest.read_text().splitlines()[:-1]]  # without the torn line
        for index, layer in ((0, "conv1"), (7, "layer2.0.conv1"), (19, "layer4.1.conv2")):
            png = f"{model}/feature_viz/{layer}.png"
            (tmp_path / job / png).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / job / png).write_bytes((tmp_path / job / lines[0]["png"]).read_bytes())
            lines.append({**lines[0], "method": "feature_viz", "layer": layer, "layer_index": index, "png": png})
            lines[-1].update(thumb=None, raw=None)
        manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    build_report(tmp_path)
    page = (tmp_path / "compare.html").read_text()
    assert page.count("<th>feature_viz, ") == 5
    for model in ("resnet18", "alexnet"):
        for layer, times in (
            ("conv1", 2),
            ("layer2.0.conv1", 1),
            ("layer4.1.conv2", 2),
        ):  # round() of 0/25/50/75/100 % of 2
            assert page.count(f'href="{"0" if model == "resnet18" else "1"}/{model}/feature_viz/{layer}.png"') == times


@pytest.mark.slow
def test_cli_writes_one_picture_per_layer_with_its_fields_refuses_bad_values_and_resumes(tmp_path, photo_dir):
    import json

    from conftest import run_cli

    out = tmp_path / "run"
    args = ["models=[alexnet]", "weights=none", "layers=[first,last]", f"images=[{photo_dir}]", "predictions=false"]
    args += ["methods=[feature_viz]", "feature_viz.steps=2", "feature_viz.size=16", "feature_viz.max_channels=3"]
    bad = run_cli([*args, "feature_viz.select=most", f"hydra.run.dir={out}"], tmp_path)
    assert bad.returncode == 2 and "feature_viz.select: 'most' is not one of auto, active, first" in bad.stderr
    assert not out.exists() or not (out / "manifest.jsonl").exists()
    for attempt in range(2):
        proc = run_cli([*args, "save_raw=true", f"hydra.run.dir={out}"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        run = json.loads((out / "run.json").read_text())
        assert run["counts"]["ok" if attempt == 0 else "skipped"] == 2, run["counts"]
    for r in records[:2]:
        assert r["method"] == "feature_viz" and r["image"] is None and r["params"]["select"] == "active"
        assert len(r["channels"]) == len(r["activation"]) == len(r["natural_max"]) == len(r["ratio"]) == 3
        assert np.load(out / r["raw"]).shape == (3, 3, 16, 16) and (out / r["png"]).is_file()


def test_the_optimising_copy_folds_batchnorm_yet_reads_each_convs_own_output_and_its_gradient():

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    for bn in model.modules():  # BatchNorm statistics far from the identity, so a wrong fold would show
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    before = fingerprint(model)
    layers = conv_layers(model)
    names = [layers[0].name, layers[len(layers) // 2].name]  # both followed by a BatchNorm
    view = view_of(model, names, side=64)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    ours = view.features(x, names)
    copy = view._optimising_copy(names)
    bns = [m for m in copy.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(names) < sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the rest folded
    assert all(not p.requires_grad for p in copy.parameters())
    assert not any(getattr(m, "inplace", False) for m in copy.modules())  # out of place: no clone of the input
    weights = [m.weight for m in copy.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    x2 = x.detach().clone().requires_grad_(True)
    for name in names:
        expected = _hooked_objective(model, name, x2, slice(None), "channel")  # [2, C] on the model itself
        torch.testing.assert_close(ours[name].mean(dim=(2, 3)), expected, rtol=1e-4, atol=1e-5)
    (g,) = torch.autograd.grad(ours[names[1]][:, 5].sum(), x)
    store = {}
    handle = dict(model.named_modules())[names[1]].register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    model(x2)
    handle.remove()
    (g2,) = torch.autograd.grad(store["a"][:, 5].sum(), x2)
    torch.testing.assert_close(g, g2, rtol=1e-3, atol=1e-4 * float(g2.abs().max()))
    assert fingerprint(model) == before and all(p.grad is None for p in model.parameters())


def test_a_model_that_cannot_be_copied_is_optimised_as_it_is():
    import threading

    model = tiny()
    model.lock = threading.Lock()  # deepcopy refuses a lock: the optimising copy cannot be made
    view = view_of(model, ["2"])
    x = torch.randn(2, 3, 40, 40, requires_grad=True)
    ours = view.features(x, ["2"])["2"]
    assert view._optimising_copy(["2"]) is model
    expected = _hooked_objective(model, "2", x.detach(), slice(None), "channel")
    torch.testing.assert_close(ours.mean(dim=(2, 3)), expected)
    assert torch.autograd.grad(ours[:, 1].sum(), x)[0].abs().sum() > 0


def test_memory_budget_bounds_the_batch_and_the_pictures_do_not_change(monkeypatch):
    """A view whose memory allows 2 inputs per forward optimises 5 channels in batches of at most 2, with the
    same pictures as one batch of 5."""
    import pipeline.methods.feature_viz as fv

    model = tiny()
    sizes: list[int] = []
    real = fv.optimise
    monkeypatch.setattr(
        fv, "optimise", lambda view, batch, p, on_step: sizes.append(len(batch)) or real(view, batch, p, on_step)
    )
    p = Params(max_channels=5, steps=3, size=24)
    free = FeatureViz(p).finish(view_of(model, ["2"]))
    bounded_view = view_of(model, ["2"])
    bounded_view.limit_batch = lambda: 2
    bounded = FeatureViz(p).finish(bounded_view)
    assert sizes == [5, 2, 2, 1]
    np.testing.assert_allclose(bounded[0].array, free[0].array, rtol=1e-4, atol=1e-5)
