"""Layer names, selection by the user's ``layers`` setting, and hook-based capture on tiny nets."""

from __future__ import annotations

import pytest
import torch
from helpers import fingerprint
from torch import nn

from pipeline.errors import UserError
from pipeline.models.capture import run_capturing
from pipeline.models.layers import conv_layers, select_layers


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(4, 6, 1))
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), block, nn.Conv2d(6, 2, 1)).eval()


def test_conv_layers_are_dotted_named_modules_in_order():
    layers = conv_layers(tiny())
    assert [layer.name for layer in layers] == ["0", "2.0", "2.2", "3"]
    assert layers[1].groups == 4 and layers[1].describe() == "Conv2d 4→4, 3×3, stride 1, groups 4"


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("all", ["0", "2.0", "2.2", "3"]),
        ("first", ["0"]),
        ("last", ["3"]),
        (["2.*"], ["2.0", "2.2"]),
        ([-1, 0], ["0", "3"]),
        ([1, -2], ["2.0", "2.2"]),  # integers index the conv list; a string is a name (["3"] below)
        (["3", "last", "2.2"], ["2.2", "3"]),
        (None, ["0", "2.0", "2.2", "3"]),
        (["0%", "100%"], ["0", "3"]),  # relative depth: the nearest of the 4 layers
        (["34%", "50%", "66.7%"], ["2.0", "2.2"]),
    ],
)
def test_select_layers(spec, expected):
    assert [layer.name for layer in select_layers(conv_layers(tiny()), spec)] == expected


@pytest.mark.parametrize("spec", [["2.1"], ["9.*"], [4], [-5], [True], ["101%"], ["-1%"], ["half%"]])
def test_select_layers_rejects_what_is_not_a_conv_layer(spec):
    with pytest.raises(UserError):
        select_layers(conv_layers(tiny()), spec, "tiny")


def test_capture_stops_after_the_deepest_layer_and_removes_its_hooks():
    model = tiny()
    before = fingerprint(model)
    ran = []
    handle = model[3].register_forward_hook(lambda m, i, o: ran.append("3"))
    seen = {}
    logits = run_capturing(model, torch.randn(1, 3, 9, 9), ["2.0", "0"], seen.__setitem__)
    handle.remove()
    assert logits is None and ran == []  # layer 3 never ran: the forward stopped at 2.0
    assert set(seen) == {"0", "2.0"} and seen["2.0"].shape == (1, 4, 4, 4)
    assert fingerprint(model) == before


def test_capture_full_returns_the_output_and_complains_about_layers_that_never_ran():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return self.used(x)

    model = Skips()
    out = run_capturing(model, torch.randn(1, 3, 4, 4), ["used"], lambda n, o: None, full=True)
    assert out.shape == (1, 2, 4, 4)
    with pytest.raises(RuntimeError, match="never ran in the forward pass: unused"):
        run_capturing(model, torch.randn(1, 3, 4, 4), ["unused"], lambda n, o: None)
    assert all(not m._forward_hooks for m in model.modules())
