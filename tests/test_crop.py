"""``crop``: a shallow unit's input-space signal shown at its receptive field. Cropped tiles hold exactly the full
signal's values inside the box, which is the unit's field plus a margin; ``auto`` crops only small fields, the
label says so, the array stays the full signal, and the overview shows the same cropped tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_methods
from torch import nn

from pipeline.methods._crop import MARGIN, signal_box
from pipeline.methods.base import SignalTile
from pipeline.models.receptive import crop_box, trace


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(4, 3, 5, padding=2),
    ).eval()


@pytest.mark.parametrize("method", ["guided_backprop", "gradient", "deconvnet"])
def test_cropped_tiles_hold_the_full_signal_inside_the_receptive_box(method):
    model, x = net(), torch.randn(2, 3, 40, 40)
    fields = trace(model, (40, 40))
    found = run_methods(model, x, ["0", "6"], {method: {"top_k": 2}})
    for out in found[(method, "0")]:  # a 3-px field in 40 px: cropped
        tiles = [t for t in out.picture.tiles if isinstance(t, SignalTile)]
        for tile, target, box in zip(tiles, out.fields["targets"], out.fields["crops"], strict=True):
            assert box == list(crop_box(fields["0"], *target["unit"], MARGIN))
            top, left, bottom, right = box
            assert top <= target["unit"][0] <= bottom and bottom - top == right - left == 5
            j = out.fields["targets"].index(target)
            np.testing.assert_array_equal(tile.values, out.array[j][:, top:bottom, left:right])
            assert tile.label.endswith("cropped") and out.array.shape[-2:] == (40, 40)
    for out in found[(method, "6")]:  # a 31-px field: shown whole
        assert "crops" not in out.fields
        assert all(t.values.shape[-2:] == (40, 40) for t in out.picture.tiles if isinstance(t, SignalTile))


def test_crop_modes_and_the_quarter_rule():
    fields = trace(net(), (40, 40))
    small, big = fields["0"], fields["6"]
    assert signal_box(small, (0, 0), "none") is None and signal_box(small, None, "auto") is None
    assert signal_box(small, (0, 0), "auto") == (0, 0, 5, 5)  # clipped at the border, square inside the image
    assert signal_box(big, (3, 3), "auto") is None
    assert signal_box(big, (3, 3), "receptive") == crop_box(big, 3, 3, MARGIN)


def test_a_field_whose_layout_was_lost_holds_for_every_unit_and_is_never_cropped():
    from pipeline.models.layers import ReceptiveField

    # as traced through attention windows (maxvit_t): one span, the union, for every unit of a 7x7 map
    lost = ReceptiveField((224, 224), ((0, 223),), ((0, 223),), (11, 11), (1.0, 1.0), True)
    assert lost.box(2, 5) == lost.box(0, 0) == (0, 0, 224, 224)
    assert signal_box(lost, (2, 5), "auto") is None and signal_box(lost, (2, 5), "receptive") is None


def test_crop_none_and_the_overview_use_the_same_rule():
    model, x = net(), torch.randn(1, 3, 40, 40)
    found = run_methods(model, x, ["0"], {"guided_backprop": {"top_k": 1, "crop": "none"}})
    (out,) = found[("guided_backprop", "0")]
    assert "crops" not in out.fields and out.picture.tiles[1].values.shape[-2:] == (40, 40)
    found = run_methods(model, x, ["0"], {"guided_backprop": {"top_k": 1}, "overview": {}})
    (overview,) = found[("overview", None)]
    featured = overview.picture.rows[1].tiles[-1]
    assert isinstance(featured, SignalTile) and featured.label.endswith("cropped")
    assert featured.values.shape[-2:] == (5, 5)
    assert overview.picture.rows[1].title[-1] == "RF 3 px, stride 1"


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = net()
        self.head = nn.Linear(3, 5)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_guided_grad_cam_crops_only_when_asked_at_its_grad_cam_peak():
    torch.manual_seed(0)
    model, x = Classifier().eval(), torch.randn(2, 3, 40, 40)
    found = run_methods(model, x, ["features.0"], {"guided_grad_cam": {"top_k": 1}})
    assert all("crops" not in out.fields for out in found[("guided_grad_cam", "features.0")])  # auto: class signal
    requests = {"guided_grad_cam": {"top_k": 2, "crop": "receptive"}, "grad_cam": {"top_k": 2}}
    found = run_methods(model, x, ["features.0"], requests)
    field = trace(model, (40, 40))["features.0"]
    for out, cam in zip(found[("guided_grad_cam", "features.0")], found[("grad_cam", "features.0")], strict=True):
        for j, (tile, box) in enumerate(zip(out.picture.tiles[1:], out.fields["crops"], strict=True)):
            peak = divmod(int(np.argmax(cam.array[j])), cam.array.shape[-1])
            assert box == list(crop_box(field, *peak, MARGIN))
            np.testing.assert_array_equal(tile.values, out.array[j][:, box[0] : box[2], box[1] : box[3]])
            assert tile.label.endswith("cropped")
