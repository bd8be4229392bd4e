"""The private core of gradient, deconvnet and guided backpropagation: one mechanism, three backward rules.

While ``backward_rules(box)`` is active, every ReLU-family call in a forward pass (``nn.ReLU`` and ``nn.ReLU6``
modules, ``F.relu``, ``torch.relu``, in-place ``relu_``, ``F.relu6``, ``F.hardtanh``) and every smooth
ReLU-like activation (SiLU, GELU, Hardswish) is routed through an autograd Function whose backward reads the
rule from ``box`` at backward time. One forward therefore serves all three rules. With forward input f,
incoming gradient R and local derivative φ'(f):

- ``gradient``:  R·φ'(f)           (ordinary backprop; for ReLU, R·1[f>0])
- ``deconvnet``: max(R, 0)         (for ReLU exactly Springenberg's R·1[R>0])
- ``guided``:    max(R·φ'(f), 0)   (for ReLU exactly R·1[f>0]·1[R>0])

For ReLU6/hardtanh φ'(f) = 1[lo<f<hi]. Multiplicative gates (sigmoid, hardsigmoid in squeeze-excitation,
softmax in attention) and every other op keep their ordinary derivative under all rules. The interception is a
``TorchFunctionMode``, so functional calls are caught as well as modules, modules reused several times are
handled per call, and nothing on the model changes. In-place variants are computed out of place: every
torchvision model uses the returned tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

RULES = ("gradient", "deconvnet", "guided")
PLAIN = RULES[0]  # the ordinary derivative: what Grad-CAM's ∂y_c/∂A and plain autograd use
ACTIVATION_POLICY = (
    "ReLU/ReLU6/hardtanh (modules and functional, in-place or not): exact Springenberg rules; "
    "SiLU/GELU/Hardswish: gradient R*phi'(f), deconvnet max(R,0), guided max(R*phi'(f),0); "
    "sigmoid/hardsigmoid gates and all other ops: ordinary derivative"
)


class RuleBox:
    """Which rule the next backward pass applies; read by every intercepted activation at backward time."""

    def __init__(self, rule: str = "gradient") -> None:
        self.rule = rule

    def __setattr__(self, key, value):
        if key == "rule" and value not in RULES:
            raise ValueError(f"unknown backward rule {value!r}; valid: {', '.join(RULES)}")
        super().__setattr__(key, value)


def _apply_rule(rule: str, grad: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    if rule == "gradient":
        return grad * local
    if rule == "deconvnet":
        return grad.clamp_min(0)
    return (grad * local).clamp_min(0)


class _Clamp(torch.autograd.Function):
    """ReLU (hi=None) or hardtanh/ReLU6 forward; its local derivative is the pass mask lo<f(<hi).

    The backward uses ATen's own fused ReLU/hardtanh backward kernels (what plain autograd runs), so the
    ``gradient`` rule costs what ordinary backprop costs and the other rules add one clamp.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, lo, hi, box):
        return x.clamp_min(lo) if hi is None else x.clamp(lo, hi)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, lo, hi, box = inputs
        # ReLU: output > 0 exactly where input > 0, so keep the output (as nn.ReLU does); hardtanh needs x.
        ctx.save_for_backward(output if hi is None else x)
        ctx.lo, ctx.hi, ctx.box = lo, hi, box

    @staticmethod
    def backward(ctx, grad):
        rule = ctx.box.rule
        if rule == "deconvnet":
            return grad.clamp_min(0), None, None, None
        (saved,) = ctx.saved_tensors
        if ctx.hi is None:
            passed = torch.ops.aten.threshold_backward(grad, saved, ctx.lo)
        else:
            passed = torch.ops.aten.hardtanh_backward(grad, saved, ctx.lo, ctx.hi)
        return (passed.clamp_min(0) if rule == "guided" else passed), None, None, None


def _silu(x):
    s = torch.sigmoid(x)
    return x * s, s * (1 + x * (1 - s))


def _gelu(x):
    return F.gelu(x), 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _gelu_tanh(x):
    c = math.sqrt(2 / math.pi)
    t = torch.tanh(c * (x + 0.044715 * x**3))
    return F.gelu(x, approximate="tanh"), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)


def _hardswish(x):
    local = torch.where(x < -3, torch.zeros_like(x), torch.where(x <= 3, x / 3 + 0.5, torch.ones_like(x)))
    return F.hardswish(x), local


_SMOOTH = {"silu": _silu, "gelu": _gelu, "gelu_tanh": _gelu_tanh, "hardswish": _hardswish}


class _Smooth(torch.autograd.Function):
    """A smooth ReLU-like activation whose backward applies the active rule to its analytic derivative."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, kind, box):
        return _SMOOTH[kind](x)[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kind, box = inputs
        ctx.save_for_backward(_SMOOTH[kind](x)[1])
        ctx.box = box

    @staticmethod
    def backward(ctx, grad):
        (local,) = ctx.saved_tensors
        return _apply_rule(ctx.box.rule, grad, local), None, None


_RELU = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_HARDTANH = {F.hardtanh, F.hardtanh_, F.relu6}


def _arg(args, kwargs, index, name, default):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


class _RuleMode(TorchFunctionMode):
    def __init__(self, box: RuleBox) -> None:
        super().__init__()
        self.box = box

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU:
            return _Clamp.apply(args[0], 0.0, None, self.box)
        if func in _HARDTANH:
            if func is F.relu6:
                lo, hi = 0.0, 6.0
            else:
                lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
                hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
            return _Clamp.apply(args[0], lo, hi, self.box)
        if func is F.silu:
            return _Smooth.apply(args[0], "silu", self.box)
        if func is F.hardswish:
            return _Smooth.apply(args[0], "hardswish", self.box)
        if func is F.gelu:
            approximate = _arg(args, kwargs, 1, "approximate", "none")
            return _Smooth.apply(args[0], "gelu_tanh" if approximate == "tanh" else "gelu", self.box)
        return func(*args, **kwargs)


@contextmanager
def backward_rules(box: RuleBox) -> Iterator[RuleBox]:
    """Route ReLU-like activations of forwards run inside this block through rule-aware autograd Functions."""
    with _RuleMode(box):
        yield box
