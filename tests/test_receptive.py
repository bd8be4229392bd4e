"""Receptive fields equal the support of each unit's input gradient (random weights), on tiny nets with padding,
pooling and branches, and at the first, middle and last conv layer of every torchvision model, border units
included. The gradient runs with the data-dependent gates opened (ReLU-family passes every gradient, max pooling
spreads to its whole window, as average pooling does) and global poolings detached (their context is reported
by a flag, not the box): what is left is the graph's own dependence of the unit on input pixels."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from pipeline.models import conv_layers
from pipeline.models.capture import run_capturing
from pipeline.models.receptive import crop_box, receptive_fields, trace
from pipeline.models.registry import (
    _EmptyOnMeta,
    build_skeleton,
    load_model,
    meta_skeleton,
    preprocessing,
    resolve_weights,
)

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
_GATES = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "silu", "gelu", "hardswish", "elu", "leaky_relu"}


class OpenGates(TorchFunctionMode):
    """Gradients pass ReLU-like gates and whole max-pool windows; global poolings are detached."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "").lstrip("_")
        if name in _GATES and isinstance(args[0], torch.Tensor):  # out of place: keep the captured conv output
            x = args[0]
            return x + (func(x.clone(), *args[1:], **kwargs) - x).detach()
        out = func(*args, **kwargs)
        if name in ("max_pool2d", "max_pool2d_with_indices") and isinstance(out, torch.Tensor):
            names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
            p = dict(zip(names, args, strict=False)) | kwargs
            spread = F.avg_pool2d(
                p["input"], p["kernel_size"], p.get("stride") or None, p.get("padding", 0), p.get("ceil_mode", False)
            )
            return out.detach() + spread - spread.detach()
        pooled = name in ("adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax")
        if pooled and isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:] == (1, 1):
            source = args[0]
            if source.shape[-2:] != (1, 1):
                return out.detach()
        return out


def support_boxes(model: nn.Module, x: torch.Tensor, units: dict[str, list[tuple[int, int]]], gates: bool) -> dict:
    """Per layer, the bounding boxes (top, left, bottom, right) of the input gradient's support of each of its
    units (channel 0): one batch item per unit, one forward and one backward for all; None for a layer whose
    units have no gradient at all."""
    items = [(layer, unit) for layer, found in units.items() for unit in found]
    xs = x.expand(len(items), -1, -1, -1).clone().requires_grad_(True)
    kept = {}
    with torch.enable_grad(), OpenGates() if gates else torch.enable_grad():
        run_capturing(model, xs, list(units), kept.__setitem__)
    picked = [kept[layer][i, 0, y, x_] for i, (layer, (y, x_)) in enumerate(items)]
    live = [p for p in picked if p.requires_grad]
    grads = torch.autograd.grad(torch.stack(live).sum(), xs, allow_unused=True)[0] if live else None
    boxes: dict = {layer: [] for layer in units}
    for i, (layer, _) in enumerate(items):
        g = grads[i].abs().sum(0) if grads is not None else torch.zeros(1, 1)
        ys, xs_ = torch.nonzero(g > 0, as_tuple=True)
        box = None if len(ys) == 0 else (int(ys.min()), int(xs_.min()), int(ys.max()) + 1, int(xs_.max()) + 1)
        boxes[layer].append(box)
    return {layer: None if all(b is None for b in found) else found for layer, found in boxes.items()}


def check_layers(model: nn.Module, x: torch.Tensor, fields: dict, units: int = 4) -> None:
    """Each field's box equals the gradient support of a corner and the opposite corner (every border clipped)
    and, with ``units=4``, of a centre and an edge unit."""
    chosen = {}
    for layer, field in fields.items():
        h, w = len(field.rows), len(field.cols)
        corners = {(0, 0), (h - 1, w - 1)}
        chosen[layer] = sorted(corners | {(h // 2, w // 2), (0, w - 1)} if units == 4 else corners)
    units = chosen
    found = support_boxes(model, x, units, gates=True)
    pooled = [layer for layer, boxes in found.items() if boxes is None]
    if pooled:  # layers that read only a global pooling (squeeze-excitation convs): their true gradient
        assert all(fields[layer].global_context for layer in pooled)
        found.update(support_boxes(model, x, {layer: units[layer] for layer in pooled}, gates=False))
    for layer, boxes in found.items():
        assert boxes == [fields[layer].box(y, x_) for y, x_ in units[layer]], layer


class Branchy(nn.Module):
    """Padding, strides, dilation, pooling with ceil_mode, explicit F.pad, two branches of different depth,
    a channel concat and a squeeze-excitation gate."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.a = nn.Conv2d(4, 4, 1)
        self.b1 = nn.Conv2d(4, 4, (1, 5), padding=(0, 2))
        self.b2 = nn.Conv2d(4, 4, 3, dilation=2)
        self.se = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 2, stride=2)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x)))
        b = self.b2(F.pad(self.b1(x), (2, 2, 2, 2)))
        x = torch.cat([self.a(x), b], 1)
        x = x * torch.sigmoid(self.se(F.adaptive_avg_pool2d(x, 1)))
        return self.head(x)


@pytest.mark.parametrize("size", [(29, 29), (32, 27)])
def test_tiny_branchy_net_fields_equal_gradient_support(size):
    torch.manual_seed(0)
    model = Branchy().eval()
    x = torch.randn(1, 3, *size)
    fields = trace(model, size)
    assert set(fields) == {"stem", "a", "b1", "b2", "se", "head"}
    check_layers(model, x, fields)
    assert fields["stem"].extent == (3, 3) and fields["stem"].stride == (2.0, 2.0)
    assert fields["b1"].extent == (7, 23) and fields["b1"].stride == (4.0, 4.0)
    assert fields["head"].global_context and not fields["b2"].global_context
    assert fields["stem"].box(0, 0) == (0, 0, 2, 2)  # the padding row and column are not the image


def test_fields_are_cached_per_model_and_size_and_leave_the_model_alone():
    model = Branchy().eval()
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    first = receptive_fields(model, (29, 29))
    assert calls == [] and first == trace(
        Branchy().eval(), (29, 29)
    )  # traced on a hook-less copy: the model is not called
    handle.remove()
    assert receptive_fields(model, (29, 29)) is first
    assert receptive_fields(model, (33, 33)) is not first
    assert not any(m._forward_hooks for m in model.modules()) and not model.training


def test_crop_box_is_the_field_widened_square_and_inside_the_image():
    fields = trace(Branchy().eval(), (29, 29))
    field = fields["stem"]  # 3 px at stride 2
    assert crop_box(field, 5, 5) == field.box(5, 5) == (9, 9, 12, 12)
    assert crop_box(field, 5, 5, margin=0.5) == (7, 7, 13, 13)  # 3 × 2 = 6 px around rows / columns 9..11
    assert crop_box(field, 0, 0, margin=0.5) == (0, 0, 6, 6)
    assert crop_box(field, 14, 14, margin=0.5) == (23, 23, 29, 29)
    assert crop_box(fields["head"], 0, 0, margin=0.5) == (0, 0, 29, 29)  # never more than the image


def lazy_model(name: str) -> nn.Module:
    """The architecture with random parameters made only for the modules that run (a forward pre-hook makes a
    module's own parameters on its first call): a check that stops at a conv pays nothing for the layers after
    it (ViT's encoder, VGG's classifier)."""
    with _EmptyOnMeta():  # parameters on the meta device, buffers (BatchNorm statistics, indices) real
        model = build_skeleton(name)
    for module in model.modules():
        module.register_forward_pre_hook(_materialize)
    return model.eval()


def _materialize(module: nn.Module, args) -> None:
    for key, p in module._parameters.items():
        if p is not None and p.is_meta:
            fan_in = p[0].numel() if p.dim() > 1 else 1
            values = (torch.rand(p.shape) - 0.5) / fan_in**0.5 if p.dim() > 1 else 0.5 + torch.rand(p.shape)
            module._parameters[key] = nn.Parameter(values, requires_grad=False)
    for key, b in module._buffers.items():
        if b is not None and b.is_meta:
            module._buffers[key] = (torch.ones if "var" in key else torch.zeros)(b.shape, dtype=b.dtype)


@pytest.fixture
def one_thread():
    """Small ops on a shared 2-core machine: one thread avoids oversubscription (measured 6-25x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*TORCHVISION, "efficientnet_lite0"])
def test_every_model_first_middle_last_field_equals_gradient_support(name, one_thread):
    torch.manual_seed(0)
    model = lazy_model(name)
    fixed = hasattr(model, "image_size") or name.startswith(("swin", "maxvit"))
    size = preprocessing(name, module=model).crop_size[0] if fixed else 80 if name == "inception_v3" else 32
    fields = trace(model, (size, size), "cpu")
    layers = conv_layers(model)
    chosen = {layer.name: fields[layer.name] for layer in (layers[0], layers[len(layers) // 2], layers[-1])}
    check_layers(model, torch.randn(1, 3, size, size), chosen, units=2)
    del model
    gc.collect()


def test_lite0_stem_field_is_three_pixels_at_stride_two_and_the_meta_trace_is_the_same():
    fields = trace(load_model("efficientnet_lite0", resolve_weights("efficientnet_lite0", "none")).module, (224, 224))
    assert trace(meta_skeleton("efficientnet_lite0"), (224, 224), "meta") == fields  # what list_layers shows
    stem = fields["features.0.0"]
    assert stem.extent == (3, 3) and stem.stride == (2.0, 2.0) and not stem.global_context
    assert stem.text() == "RF 3 px, stride 2"
    assert np.diff([r[0] for r in stem.rows[1:]]).tolist() == [2] * 110
