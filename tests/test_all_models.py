"""Every torchvision classification model (weights=none): filters, feature maps, the three backprop methods, the
CAM family, Guided Grad-CAM, SmoothGrad and feature visualisation at its first and last conv layer and its class
logit, exact and side-effect free."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torchvision
from helpers import activation_and_grad, fingerprint, run_methods

from pipeline.methods.feature_maps import feature_maps
from pipeline.methods.filters import filters
from pipeline.models import conv_layers, load_model, resolve_weights
from pipeline.models.capture import run_capturing
from pipeline.models.registry import available_models, clear_cache

TORCHVISION = torchvision.models.list_models(module=torchvision.models)


def test_the_model_list_is_complete():
    assert len(TORCHVISION) == 80
    assert set(available_models()) == {*TORCHVISION, "efficientnet_lite0"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [*TORCHVISION, "efficientnet_lite0"])
def test_every_model_first_and_last_layer(name):
    loaded = load_model(name, resolve_weights(name, "none", seed=0))
    model = loaded.module
    layers = conv_layers(model)
    assert layers, "every classification model has at least one Conv2d"
    first, last = layers[0], layers[-1]
    size = input_size_for(name, loaded)
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    before = fingerprint(model)

    # filters: the real weights of the layer, right shape
    modules = dict(model.named_modules())
    for layer in (first, last):
        result = filters(modules[layer.name].weight, max_filters=8)
        assert result.data.shape[0] == min(8, layer.out_channels)
        assert torch.isfinite(result.data).all()

    # feature maps: captured from one forward, equal to a plain hook's view of the same forward
    seen = {}
    with torch.inference_mode():
        run_capturing(model, x, [first.name, last.name], lambda n, out: seen.__setitem__(n, out.clone()))
    for layer in (first, last):
        maps = feature_maps(seen[layer.name][0], top_k=4)
        assert maps.maps.shape[0] == min(4, layer.out_channels)
        assert torch.isfinite(maps.maps).all()

    # backprop: finite, non-zero input gradients; the "gradient" rule equals plain autograd exactly
    requests = {"gradient": {"top_k": 2}, "guided_backprop": {"top_k": 2}, "deconvnet": {"target": "class"}}
    results = run_methods(model, x, [first.name, last.name], requests)
    assert len(results) == (2 if first.name == last.name else 4) + 1
    for (method, layer), (out,) in results.items():
        g = torch.from_numpy(out.array)
        assert g.shape[1:] == x.shape[1:], (method, layer)
        assert torch.isfinite(g).all(), (layer, method)
        if layer is None and zero_head(model):
            assert g.abs().sum() == 0  # ViTs start with a zero classifier: every logit is constant
        else:
            assert g.abs().sum() > 0, (layer, method)
    (ours,) = results[("gradient", last.name)]
    plain = _plain_gradient(model, x, last.name, ours.fields["targets"][0])
    torch.testing.assert_close(
        torch.from_numpy(ours.array[0]), plain, rtol=1e-4, atol=1e-6 * float(plain.abs().max()) + 1e-12
    )

    # the CAM family, Guided Grad-CAM and SmoothGrad, all from one more shared pass
    requests = {m: {"top_k": 2} for m in ("grad_cam", "grad_cam_pp", "layer_cam")}
    requests["guided_grad_cam"] = {"top_k": 2, "noise_samples": 2}
    requests["guided_backprop"] = {"top_k": 1, "noise_samples": 2}
    requests["overview"] = {"per_row": 2}
    requests["feature_viz"] = {"max_channels": 1, "steps": 2, "size": 32}
    found = run_methods(model, x, [first.name, last.name], requests)
    (overview,) = found.pop(("overview", None))
    for layer in {first.name: first, last.name: last}.values():  # feature viz: 2 steps, natural maxima from x
        (viz,) = found.pop(("feature_viz", layer.name))
        n = 1
        assert viz.array.shape == (n, 3, 32, 32) and ((viz.array >= 0) & (viz.array <= 1)).all(), layer
        assert np.isfinite(viz.fields["activation"]).all() and len(viz.fields["natural_max"]) == n, layer
    assert overview.array.shape == (len({first.name, last.name}), 7) and np.isfinite(overview.array).all()
    for (method, layer), (out,) in found.items():
        assert np.isfinite(out.array).all(), (method, layer)
        if method in ("grad_cam", "grad_cam_pp", "layer_cam"):
            assert out.array.shape[0] == 2 and (out.array >= 0).all(), (method, layer)
        elif method == "guided_grad_cam":
            assert out.array.shape == (2, *x.shape[1:]), layer
    (cam,) = found[("grad_cam", last.name)]
    a, g, _ = activation_and_grad(model, x, last.name, 0, cam.fields["targets"][0]["class_index"])
    expected = torch.relu((g.mean(dim=(1, 2), keepdim=True) * a).sum(0))
    torch.testing.assert_close(
        torch.from_numpy(cam.array[0]), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()) + 1e-12
    )
    assert fingerprint(model) == before
    del loaded, model, results, found
    clear_cache()
    gc.collect()


def input_size_for(name: str, loaded) -> int:
    """A small input the architecture accepts (speed); fixed-size ones (ViT, Swin, MaxViT) get their own size."""
    if hasattr(loaded.module, "image_size") or name.startswith(("swin", "maxvit")):
        return loaded.transform.crop_size[0]
    return 96


def zero_head(model: torch.nn.Module) -> bool:
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return bool(linears) and bool((linears[-1].weight == 0).all())


def _plain_gradient(model, x, layer, target):
    """Ordinary autograd of a target unit of ``layer``, with a hook and no interception."""
    y, w = target["unit"]
    store = {}

    def hook(module, inputs, output):  # clone now: an in-place ReLU may overwrite the output later
        store.setdefault("value", output[0, target["channel"], y, w].clone())

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        xx = x.clone().requires_grad_(True)
        with torch.enable_grad():
            model(xx)
            (grad,) = torch.autograd.grad(store["value"], xx)
    finally:
        handle.remove()
    return grad[0]
