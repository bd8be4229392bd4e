"""The CAM family, Guided Grad-CAM and SmoothGrad against independent computations written here (plain hooks and
autograd, the papers' formulas), on tiny nets and on torchvision's ReLU styles; sharing of the one forward;
and, on real weights, maps a person would accept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import activation_and_grad, fingerprint, run_methods
from torch import nn

from pipeline.engine import shared
from pipeline.methods.base import Noise

CAMS = ("grad_cam", "grad_cam_pp", "layer_cam")


# --- the formulas, written out independently ------------------------------------------------------------------------
def ref_grad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Selvaraju et al.: weights are the spatially averaged gradients; ReLU of the weighted channel sum. [C,h,w]."""
    weights = g.sum(dim=(1, 2)) / (g.shape[1] * g.shape[2])
    return torch.relu(torch.einsum("c,chw->hw", weights, a))


def ref_grad_cam_pp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(a.shape[1:], dtype=torch.float64)
    a, g = a.double(), g.double()
    for k in range(a.shape[0]):
        sum_a = a[k].sum()
        coeff = torch.zeros_like(g[k])
        nz = g[k] != 0
        coeff[nz] = g[k][nz] ** 2 / (2 * g[k][nz] ** 2 + sum_a * g[k][nz] ** 3 + 1e-6)
        out += (coeff * torch.relu(g[k])).sum() * a[k]
    return torch.relu(out).float()


def ref_layer_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.relu((torch.relu(g) * a).sum(0))


REFERENCE = {"grad_cam": ref_grad_cam, "grad_cam_pp": ref_grad_cam_pp, "layer_cam": ref_layer_cam}


class Tiny(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), act, nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(inplace=True)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 6))

    def forward(self, x):
        return self.head(self.features(x))


def check_cams(model, x, layers, top_k=3, rtol=1e-4):
    found = run_methods(model, x, layers, {m: {"top_k": top_k} for m in CAMS})
    nontrivial = 0
    for method in CAMS:
        for layer in layers:
            outs = found[(method, layer)]
            for i, out in enumerate(outs):
                classes = [t["class_index"] for t in out.fields["targets"]]
                assert out.array.shape[0] == len(classes) == top_k
                for r, cls in enumerate(classes):
                    a, g, logits = activation_and_grad(model, x, layer, i, cls)
                    if r == 0:
                        assert cls == int(logits[i].argmax()), "targets are the top predicted classes, in order"
                    expected = REFERENCE[method](a, g)
                    scale = float(expected.abs().max()) + 1e-12
                    torch.testing.assert_close(torch.from_numpy(out.array[r]), expected, rtol=rtol, atol=1e-5 * scale)
                    nontrivial += bool(expected.abs().max() > 0)
    assert nontrivial > 0, "every reference map was zero: the comparison would prove nothing"


@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.ReLU6(), nn.SiLU()], ids=["relu_inplace", "relu6", "silu"])
def test_cams_equal_the_formulas_on_tiny_nets(act):
    torch.manual_seed(0)
    model = Tiny(act).eval()
    before = fingerprint(model)
    check_cams(model, torch.randn(2, 3, 12, 12), ["features.0", "features.2"])
    assert fingerprint(model) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,layer",
    [
        ("resnet18", "layer3.1.conv2"),  # one in-place ReLU module reused in every block
        ("vgg16", "features.21"),  # conv followed by an in-place ReLU
        ("googlenet", "inception4a.branch2.1.conv"),  # functional F.relu(inplace=True) only
        ("mobilenet_v2", "features.10.conv.0.0"),  # ReLU6
    ],
)
def test_cams_equal_the_formulas_on_torchvision_relu_styles(name, layer):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval().requires_grad_(False)
    before = fingerprint(model)
    check_cams(model, torch.randn(2, 3, 96, 96), [layer], top_k=2, rtol=2e-4)
    assert fingerprint(model) == before


# --- Guided Grad-CAM against a classic guided backprop ---------------------------------------------------------------
class GuidedReLU(torch.autograd.Function):
    """The textbook guided rule, written as its own Function: pass R where f > 0 and R > 0 (and f < hi)."""

    @staticmethod
    def forward(ctx, x, hi):
        ctx.save_for_backward(x)
        ctx.hi = hi
        return x.clamp(0, hi) if hi else x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        open_ = (x > 0) & (x < ctx.hi) if ctx.hi else x > 0
        return grad * open_ * (grad > 0), None


class Swapped(nn.Module):
    def __init__(self, hi=None):
        super().__init__()
        self.hi = hi

    def forward(self, x):
        return GuidedReLU.apply(x, self.hi)


def classic_guided(model: nn.Module, x: torch.Tensor, image: int, cls: int) -> torch.Tensor:
    """Guided backprop of one logit by swapping every ReLU/ReLU6 module of a copy for GuidedReLU."""
    import copy

    twin = copy.deepcopy(model)
    for parent in twin.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, child_name, Swapped(6.0))
            elif isinstance(child, nn.ReLU):
                setattr(parent, child_name, Swapped())
    xx = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(twin(xx)[image, cls], xx)
    return g[image]


@pytest.mark.parametrize(
    "name,layer",
    [
        ("tiny", "features.2"),
        pytest.param("resnet18", "layer2.0.conv1", marks=pytest.mark.slow),
        pytest.param("mobilenet_v2", "features.7.conv.1.0", marks=pytest.mark.slow),
    ],
)
def test_guided_grad_cam_is_guided_backprop_times_upsampled_grad_cam(name, layer):
    torch.manual_seed(1)
    model = Tiny(nn.ReLU()).eval() if name == "tiny" else torchvision.models.get_model(name, weights=None).eval()
    model.requires_grad_(False)
    x = torch.randn(2, 3, 64, 64) if name != "tiny" else torch.randn(2, 3, 12, 12)
    outs = run_methods(model, x, [layer], {"guided_grad_cam": {"top_k": 2}})[("guided_grad_cam", layer)]
    for i, out in enumerate(outs):
        assert out.array.shape == (2, 3, *x.shape[-2:])
        for r, target in enumerate(out.fields["targets"]):
            a, g, _ = activation_and_grad(model, x, layer, i, target["class_index"])
            cam = ref_grad_cam(a, g)
            up = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            expected = classic_guided(model, x, i, target["class_index"]) * up
            scale = float(expected.abs().max()) + 1e-12
            torch.testing.assert_close(torch.from_numpy(out.array[r]), expected, rtol=1e-4, atol=1e-5 * scale)


# --- sharing: one forward, one backward per class ---------------------------------------------------------------------
def test_one_forward_and_one_layer_backward_per_class_serve_every_layer_and_cam(monkeypatch):
    torch.manual_seed(2)
    model = Tiny(nn.ReLU()).eval()
    forwards, layer_backwards = [], []
    original = shared.GraphSession.layer_grads

    def counted(self, grad_outputs):
        layer_backwards.append(grad_outputs.shape)
        return original(self, grad_outputs)

    monkeypatch.setattr(shared.GraphSession, "layer_grads", counted)
    handle = model.register_forward_pre_hook(lambda m, a: forwards.append(a[0].shape[0]))
    try:
        methods = {m: {"top_k": 3} for m in (*CAMS, "guided_grad_cam")} | {"feature_maps": {"top_k": 2}}
        found = run_methods(model, torch.randn(4, 3, 12, 12), ["features.0", "features.2"], methods)
    finally:
        handle.remove()
    assert forwards == [4], "one forward for the batch, whatever the layers and methods"
    assert len(layer_backwards) == 3, "one backward per class rank, batched over images, for every layer at once"
    assert len(found) == 2 * 5 and all(len(v) == 4 for v in found.values())


def test_explicit_classes_and_their_check():
    torch.manual_seed(3)
    model = Tiny(nn.ReLU()).eval()
    found = run_methods(model, torch.randn(2, 3, 12, 12), ["features.2"], {"grad_cam": {"class_index": [5, 0]}})
    for out in found[("grad_cam", "features.2")]:
        assert [t["class_index"] for t in out.fields["targets"]] == [5, 0]
    with pytest.raises(ValueError, match="out of range"):
        run_methods(model, torch.randn(1, 3, 12, 12), ["features.2"], {"layer_cam": {"class_index": [6]}})


# --- SmoothGrad ----------------------------------------------------------------------------------------------------
SMOOTHABLE = ("gradient", "deconvnet", "guided_backprop", "guided_grad_cam")


@pytest.mark.parametrize("method", SMOOTHABLE)
def test_smoothgrad_with_zero_sigma_is_the_plain_method_and_reruns_are_identical(method):
    torch.manual_seed(4)
    model = Tiny(nn.ReLU()).eval()
    x = torch.randn(2, 3, 12, 12)
    plain = run_methods(model, x, ["features.2"], {method: {}})
    zero = run_methods(model, x, ["features.2"], {method: {"noise_samples": 8, "noise_sigma": 0.0}})
    noisy = [run_methods(model, x, ["features.2"], {method: {"noise_samples": 8}}) for _ in range(2)]
    for key, outs in plain.items():
        for a, b, c, d in zip(outs, zero[key], noisy[0][key], noisy[1][key], strict=True):
            assert np.array_equal(a.array, b.array)
            assert np.array_equal(c.array, d.array), "seeded noise: reruns give the same bytes"
            if method == "deconvnet":  # its rule never looks at f: with no max-pool switches, noise cannot matter
                np.testing.assert_allclose(a.array, c.array, rtol=1e-5, atol=1e-7)
            else:
                assert not np.allclose(a.array, c.array), "with σ > 0 the noise does change the signal"


def test_smoothgrad_is_the_mean_of_plain_gradients_over_the_noisy_copies():
    torch.manual_seed(5)
    model = Tiny(nn.ReLU()).eval()
    x = torch.randn(2, 3, 12, 12)
    labels = ["0", "1"]  # what the in-memory runner calls the images of a batch
    noise = Noise(samples=6, sigma=0.2)
    found = run_methods(model, x, [], {"gradient": {"target": "class", "noise_samples": 6, "noise_sigma": 0.2}})
    (outs,) = found.values()
    draws = shared.noise_for(x, labels, 0, noise)  # the documented noise: seed 0, each image's own generator
    for i, out in enumerate(outs):
        cls = out.fields["targets"][0]["class_index"]
        total = torch.zeros_like(x[i])
        for s in range(noise.samples):
            xx = (x + draws[s]).requires_grad_(True)
            (g,) = torch.autograd.grad(model(xx)[i, cls], xx)
            total += g[i]
        torch.testing.assert_close(torch.from_numpy(out.array[0]), total / noise.samples, rtol=1e-4, atol=1e-6)
        assert abs(float(draws[:, i].std()) - 0.2 * float(x[i].max() - x[i].min())) < 0.05


def test_an_image_gets_the_same_noise_in_any_batch():
    x = torch.randn(3, 3, 8, 8)
    noise = Noise(samples=4, sigma=0.1)
    together = shared.noise_for(x, ["a", "b", "c"], 7, noise)
    alone = shared.noise_for(x[1:2], ["b"], 7, noise)
    assert torch.equal(together[:, 1], alone[:, 0])
    assert not torch.equal(shared.noise_for(x, ["a", "b", "c"], 8, noise), together)  # the seed matters


# --- real weights: maps a person would accept -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lite0_photos():
    from pipeline.images import load_image, sample_images
    from pipeline.models import load_model, resolve_weights

    loaded = load_model("efficientnet_lite0", resolve_weights("efficientnet_lite0", "DEFAULT"))
    paths = {p.stem: p for p in sample_images()}
    if "chelsea" not in paths:
        pytest.fail("scikit-image's sample photos are missing: install requirements-dev.txt")
    return loaded, {name: loaded.transform(load_image(paths[name])) for name in ("grace_hopper", "chelsea", "coffee")}


def test_on_real_weights_each_class_map_lands_on_its_own_object(lite0_photos):
    loaded, photos = lite0_photos
    x = photos["grace_hopper"][None]
    layer = "features.5.0.block.0.0"  # 14×14
    classes = {"mortarboard": 667, "Windsor tie": 906}
    found = run_methods(loaded.module, x, [layer], {"grad_cam": {"class_index": list(classes.values())}})
    (out,) = found[("grad_cam", layer)]
    peaks = []
    for cam in out.array:
        y, x_ = np.unravel_index(int(cam.argmax()), cam.shape)
        peaks.append((y / cam.shape[0], x_ / cam.shape[1]))
    (cap_y, _), (tie_y, tie_x) = peaks
    assert cap_y < 0.35, f"the mortarboard map peaks at the cap, near the top (got row {cap_y:.2f})"
    assert tie_y > 0.55 and 0.3 < tie_x < 0.7, f"the tie map peaks low and central (got {tie_y:.2f}, {tie_x:.2f})"


@pytest.mark.parametrize("photo", ["coffee", "chelsea"])
def test_on_real_weights_the_top_class_map_sits_on_the_object_not_the_border(lite0_photos, photo):
    loaded, photos = lite0_photos
    found = run_methods(loaded.module, photos[photo][None], ["features.8.0"], {"grad_cam": {"top_k": 1}})
    (out,) = found[("grad_cam", "features.8.0")]
    cam = out.array[0]
    assert cam.shape == (7, 7) and cam.max() > 0
    border = np.concatenate([cam[0], cam[-1], cam[1:-1, 0], cam[1:-1, -1]])
    assert cam[2:5, 2:5].mean() > 1.5 * border.mean(), (cam[2:5, 2:5].mean(), border.mean())
