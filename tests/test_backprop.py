"""The three backward rules on tiny nets: hand-computed values, torchvision's ReLU quirks against an
independent classic implementation, no side effects, and flat hooks and memory over many calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fingerprint, rss_mb, run_methods
from torch import nn

from pipeline.methods._rules import RuleBox, backward_rules

# --- hand-computed expectations ----------------------------------------------------------------------------------
# x = [-1, 2, 3] on one row. conv_a (1->2, 1x1, weights [1, -1]) -> ReLU -> conv_b (2->1, weights [2, -3]).
# Objective: sum of conv_b's channel 0, so R = 2 on ReLU channel 0 and R = -3 on channel 1, at every position.
# ReLU inputs f: channel 0 = [-1, 2, 3], channel 1 = [1, -2, -3].
#   gradient  R*1[f>0]:        ch0 [0, 2, 2],  ch1 [-3, 0, 0]  -> dx = ch0 - ch1 = [3, 2, 2]
#   guided    R*1[f>0]*1[R>0]: ch0 [0, 2, 2],  ch1 [0, 0, 0]   -> dx = [0, 2, 2]
#   deconvnet R*1[R>0]:        ch0 [2, 2, 2],  ch1 [0, 0, 0]   -> dx = [2, 2, 2]
HAND = {"gradient": [3.0, 2.0, 2.0], "guided_backprop": [0.0, 2.0, 2.0], "deconvnet": [2.0, 2.0, 2.0]}


class Functional(nn.Module):
    """conv_a -> activation given as a callable (module or functional form) -> conv_b."""

    def __init__(self, act):
        super().__init__()
        self.conv_a = nn.Conv2d(1, 2, 1, bias=False)
        self.conv_b = nn.Conv2d(2, 1, 1, bias=False)
        self.act = act
        with torch.no_grad():
            self.conv_a.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv_b.weight.copy_(torch.tensor([2.0, -3.0]).view(1, 2, 1, 1))

    def forward(self, x):
        return self.conv_b(self.act(self.conv_a(x)))


ACTIVATIONS = {
    "nn.ReLU": nn.ReLU(),
    "nn.ReLU(inplace)": nn.ReLU(inplace=True),
    "F.relu": F.relu,
    "F.relu(inplace)": lambda t: F.relu(t, inplace=True),
    "torch.relu": torch.relu,
    "torch.relu_": torch.relu_,
    "Tensor.relu": lambda t: t.relu(),
    "Tensor.relu_": lambda t: t.relu_(),
    "nn.ReLU6": nn.ReLU6(),
    "F.relu6": F.relu6,
    "F.hardtanh(0,6)": lambda t: F.hardtanh(t, 0.0, 6.0),
}


def grads_for(model, x, layer, method, params=None):
    """The method's outputs (one per image) for ``layer``'s channel targets, via the engine's shared pass."""
    found = run_methods(model, x, [layer], {method: params or {"top_k": 1, "objective": "sum"}})
    return found[(method, layer)]


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("method", list(HAND))
def test_hand_computed_rules(act, method):
    model = Functional(ACTIVATIONS[act]).eval()
    x = torch.tensor([-1.0, 2.0, 3.0]).view(1, 1, 1, 3)
    (out,) = grads_for(model, x, "conv_b", method)
    assert out.fields["targets"][0]["channel"] == 0
    assert out.fields["targets"][0]["value"] == pytest.approx(2 * 0 + 2 * 2 + 2 * 3 - 3 * 1)  # sum of conv_b = 7
    assert out.array[0, 0, 0].tolist() == HAND[method]


@pytest.mark.parametrize("act", ["nn.ReLU6", "F.relu6", "F.hardtanh(0,6)"])
def test_relu6_also_gates_above_six(act):
    """ReLU6 passes gradient only where 0 < f < 6: an input of 7 closes channel 0's gate."""
    model = Functional(ACTIVATIONS[act]).eval()
    x = torch.tensor([-1.0, 7.0, 3.0]).view(1, 1, 1, 3)
    assert grads_for(model, x, "conv_b", "gradient")[0].array[0, 0, 0].tolist() == [3.0, 0.0, 2.0]
    assert grads_for(model, x, "conv_b", "guided_backprop")[0].array[0, 0, 0].tolist() == [0.0, 0.0, 2.0]
    assert grads_for(model, x, "conv_b", "deconvnet")[0].array[0, 0, 0].tolist() == [2.0, 2.0, 2.0]


def test_max_objective_backpropagates_the_single_most_active_unit():
    model = Functional(nn.ReLU()).eval()
    x = torch.tensor([-1.0, 2.0, 3.0]).view(1, 1, 1, 3)  # conv_b = [-3, 4, 6]: peak 6 at column 2
    (out,) = grads_for(model, x, "conv_b", "gradient", {"top_k": 1, "objective": "max"})
    target = out.fields["targets"][0]
    assert (target["unit"], target["value"]) == ([0, 2], 6.0)
    assert out.array[0, 0, 0].tolist() == [0.0, 0.0, 2.0]


def test_without_relu_family_guided_backprop_is_the_plain_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.Tanh(), nn.Conv2d(6, 5, 3), nn.Sigmoid(), nn.Conv2d(5, 4, 3)
    ).eval()
    x = torch.randn(2, 3, 12, 12)
    outs = grads_for(model, x, "5", "guided_backprop", {"top_k": 3})
    for i in range(2):
        for j, target in enumerate(outs[i].fields["targets"]):
            xx = x.clone().requires_grad_(True)
            y, w = target["unit"]
            (plain,) = torch.autograd.grad(model(xx)[i, target["channel"], y, w], xx)
            torch.testing.assert_close(torch.from_numpy(outs[i].array[j]), plain[i])
            assert plain[1 - i].abs().sum() == 0  # images in a batch do not mix


# --- torchvision quirks vs an independent classic implementation ---------------------------------------------------
class ClassicRule(torch.autograd.Function):
    """The textbook way: an explicit ReLU Function with a hand-written backward, substituted by hand."""

    @staticmethod
    def forward(ctx, x, rule, hi):
        ctx.save_for_backward(x)
        ctx.rule, ctx.hi = rule, hi
        return x.clamp(0, hi) if hi else x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        open_ = (x > 0) & (x < ctx.hi) if ctx.hi else x > 0
        if ctx.rule == "gradient":
            return grad * open_, None, None
        if ctx.rule == "deconvnet":
            return grad.clamp(min=0), None, None
        return (grad * open_).clamp(min=0), None, None


class Quirky(nn.Module):
    """Mimics torchvision's ReLU styles; with ``classic`` set, every activation is the ClassicRule instead."""

    def __init__(self, style: str, classic: str | None = None):
        super().__init__()
        self.style, self.classic = style, classic
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(16 if style == "densenet" else 8, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6(inplace=True)

    def act(self, x, which=None):
        if self.classic:
            return ClassicRule.apply(x, self.classic, 6.0 if self.style == "mobilenet_v2" else None)
        if self.style == "resnet":  # one in-place module, called several times per block
            return self.relu(x)
        if self.style == "inception":  # BasicConv2d: functional, in place
            return F.relu(x, inplace=True)
        if self.style == "mobilenet_v2":
            return self.relu6(x)
        return F.relu(x)  # densenet's functional ReLU

    def forward(self, x):
        x = self.act(self.stem(x))
        if self.style == "resnet":
            out = self.act(self.conv1(x))
            x = self.act(self.conv2(out) + x)
        elif self.style == "densenet":
            x = self.act(torch.cat([x, self.conv2(self.act(self.conv1(x)))], 1))
        else:
            x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.head(x)


def classic_reference(style, state, x, layer, rule, targets):
    """One forward and one backward per target through the ClassicRule net (no interception)."""
    reference = Quirky(style, classic=rule).eval()
    reference.load_state_dict(state)
    out = []
    for i, row in enumerate(targets):
        grads = []
        for t in row:
            xx = x.clone().requires_grad_(True)
            store = {}
            handle = dict(reference.named_modules())[layer].register_forward_hook(
                lambda m, a, o, store=store: store.setdefault("o", o)
            )
            reference(xx)
            handle.remove()
            (g,) = torch.autograd.grad(store["o"][i, t["channel"], t["unit"][0], t["unit"][1]], xx)
            grads.append(g[i])
        out.append(torch.stack(grads))
    return out


@pytest.mark.parametrize("style", ["resnet", "inception", "mobilenet_v2", "densenet"])
@pytest.mark.parametrize(
    "method,rule", [("guided_backprop", "guided"), ("gradient", "gradient"), ("deconvnet", "deconvnet")]
)
@pytest.mark.parametrize("layer", ["conv2", "head"])
def test_quirks_match_classic_implementation(style, method, rule, layer):
    torch.manual_seed(1)
    model = Quirky(style).eval()
    x = torch.randn(2, 3, 10, 10)
    before = fingerprint(model)
    outs = grads_for(model, x, layer, method, {"top_k": 4})
    expected = classic_reference(style, model.state_dict(), x, layer, rule, [o.fields["targets"] for o in outs])
    for i in range(2):
        torch.testing.assert_close(torch.from_numpy(outs[i].array), expected[i], rtol=1e-5, atol=1e-6)
        assert abs(outs[i].array).sum() > 0
    assert fingerprint(model) == before


def test_loop_and_vmap_strategies_agree():
    torch.manual_seed(2)
    model = Quirky("densenet").eval()
    x = torch.randn(3, 3, 10, 10)
    methods = {"guided_backprop": {"top_k": 5}, "deconvnet": {"top_k": 2, "objective": "sum"}}
    results = {s: run_methods(model, x, ["conv2", "head"], methods, strategy=s) for s in ("loop", "vmap")}
    assert results["loop"].keys() == results["vmap"].keys() and len(results["loop"]) == 4
    for key, loop in results["loop"].items():
        for a, b in zip(loop, results["vmap"][key], strict=True):
            assert a.fields["targets"] == b.fields["targets"]
            np.testing.assert_allclose(a.array, b.array, rtol=1e-5, atol=1e-6)


# --- no side effects, also when the forward raises; flat over many calls -------------------------------------------
def test_model_is_unchanged_when_the_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU(inplace=True)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            self.relu(self.conv(x))
            raise RuntimeError("boom")

    model = Boom().eval()
    before = fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        run_methods(model, torch.randn(1, 3, 8, 8), ["head"], {"guided_backprop": {}})
    assert fingerprint(model) == before
    assert torch._C._len_torch_function_stack() == 0
    # and outside the block activations are ordinary again
    x = torch.randn(5, requires_grad=True)
    y = F.relu(x)
    assert y.grad_fn.name() != "_ClampBackward"


def test_rule_box_rejects_unknown_rules():
    with pytest.raises(ValueError, match="unknown backward rule"):
        RuleBox("magic")
    with backward_rules(RuleBox()) as box:
        assert box.rule == "gradient"


def test_hundred_calls_leave_hooks_and_memory_flat():
    torch.manual_seed(0)
    model = Quirky("resnet").eval()
    x = torch.randn(2, 3, 32, 32)
    before = fingerprint(model)
    requests = {m: {"top_k": 4} for m in ("guided_backprop", "gradient", "deconvnet")}
    rss = []
    for i in range(100):
        for outputs in run_methods(model, x, ["conv1", "head"], requests).values():
            assert outputs[0].array.shape == (4, 3, 32, 32)
        if i in (19, 99):
            rss.append(rss_mb())
    assert fingerprint(model) == before
    assert rss[1] - rss[0] < 20, f"memory grew from {rss[0]:.0f} MB to {rss[1]:.0f} MB over 80 calls"
