"""filters and feature_maps against independent computations; display normalisation and grids."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.methods import base
from pipeline.methods.feature_maps import feature_maps
from pipeline.methods.filters import FiltersMethod, filters
from pipeline.models.layers import conv_layers
from pipeline.output.files import encode_png
from pipeline.render.figures import draw
from pipeline.render.grid import compose, shrink_values
from pipeline.render.normalize import colorize, minmax, positive, signed


def test_rgb_filters_are_the_layer_weights():
    w = torch.randn(10, 3, 5, 5)
    result = filters(w, max_filters=4)
    assert result.view == "rgb" and result.indices == [0, 1, 2, 3]
    assert torch.equal(result.data, w[:4])


def test_non_rgb_layers_show_input_channel_slices_or_their_mean():
    w = torch.randn(6, 32, 3, 3)
    channels = filters(w, max_filters=0, max_in_channels=16)
    assert channels.view == "channels" and channels.data.shape == (6, 16, 3, 3)
    assert torch.equal(channels.data, w[:, :16])
    mean = filters(w, view="mean")
    torch.testing.assert_close(mean.data[:, 0], w.mean(1))


def test_depthwise_filters_have_one_slice_each():
    w = torch.randn(8, 1, 3, 3)  # groups == channels
    result = filters(w)
    assert result.view == "channels" and result.data.shape == (8, 1, 3, 3)
    with pytest.raises(ValueError, match="needs 3 input channels"):
        filters(w, view="rgb")


def test_feature_maps_pick_the_most_active_channels():
    torch.manual_seed(0)
    act = torch.randn(20, 7, 7)
    result = feature_maps(act, top_k=5)
    expected = sorted(range(20), key=lambda c: -float(act[c].mean()))[:5]
    assert result.channels == expected
    assert torch.equal(result.maps, act[expected])
    np.testing.assert_allclose(result.scores, [float(act[c].mean()) for c in expected], rtol=1e-6)
    by_max = feature_maps(act, top_k=3, rank_by="max")
    assert by_max.channels == sorted(range(20), key=lambda c: -float(act[c].max()))[:3]


def test_feature_maps_explicit_channels_keep_their_order():
    act = torch.arange(4 * 9, dtype=torch.float32).view(4, 3, 3)
    result = feature_maps(act, channels=[3, 0, -1])
    assert result.channels == [3, 0, 3]
    with pytest.raises(ValueError, match="out of range"):
        feature_maps(act, channels=[4])


def test_normalisations():
    x = np.array([-2.0, 0.0, 1.0, 4.0])
    np.testing.assert_allclose(minmax(x), [0, 1 / 3, 0.5, 1])
    np.testing.assert_allclose(signed(x), [0.25, 0.5, 0.625, 1.0])  # zero is mid-gray
    np.testing.assert_allclose(positive(x, 100), [0, 0, 0.25, 1])
    assert (minmax(np.ones(3)) == 0).all() and (signed(np.zeros(3)) == 0.5).all()
    # a signal confined to a few pixels is scaled by its own values, not blanked by a percentile of zeros
    sparse = np.zeros(10_000)
    sparse[:20] = np.linspace(-1, 2, 20)
    shown = signed(sparse, 99.5)
    assert shown[19] > 0.99 and shown[0] < 0.3 and (shown[20:] == 0.5).all()
    assert positive(sparse, 99.5)[19] > 0.99
    rgb = colorize(np.array([[0.0, 1.0]]), "gray")
    assert rgb.tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_grid_places_every_tile_with_room_for_labels_and_header():
    tiles = [np.full((5, 5, 3), (10 * i, 200, 13), dtype=np.uint8) for i in range(10)]
    image = compose(tiles, [f"t{i}" for i in range(10)], ["title", "subtitle"], tile_px=40)
    arr = np.asarray(image)
    assert image.width >= 4 * 40 and image.height > 3 * 40
    # nearest-neighbour enlargement keeps each tile a flat colour: find tile 9's colour as a 40x40 block
    ys, xs = np.where((arr == (90, 200, 13)).all(-1))
    assert len(ys) == 40 * 40 and ys.max() - ys.min() == 39 and xs.max() - xs.min() == 39


def test_outputs_hold_the_exact_array_they_show():
    conv = torch.nn.Conv2d(3, 4, 3)
    (layer,) = conv_layers(torch.nn.Sequential(conv))
    output = FiltersMethod().for_layer(layer, conv.weight)
    assert output.array.dtype == np.float32 and np.array_equal(output.array, conv.weight.detach().numpy())
    assert [t.label for t in output.picture.tiles] == ["#0", "#1", "#2", "#3"]
    assert draw(output.picture, ["h"]).mode == "RGB"
    g = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    picture = base.Picture([base.SignalTile(v, label) for v, label in zip(g, "ab", strict=True)], tile_px=32)
    image = draw(picture, ["h"])
    assert image.mode == "RGB" and image.width >= 2 * 32


@pytest.mark.parametrize(
    ("mode", "shape"), [("RGB", (7, 5, 3)), ("L", (3, 9)), ("RGBA", (4, 6, 4)), ("RGB", (1, 1, 3))]
)
def test_png_encoder_round_trips_exactly_through_pillow(mode, shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    image = Image.fromarray(pixels, mode)
    for level in (0, 1, 9):
        data = encode_png(image, level)
        decoded = Image.open(io.BytesIO(data))
        decoded.load()  # verifies every chunk CRC and the zlib stream
        assert decoded.format == "PNG" and decoded.mode == mode
        assert np.array_equal(np.asarray(decoded), pixels)
        assert encode_png(image, level) == data  # no timestamps: equal pictures, equal bytes


def test_png_encoder_converts_other_modes_to_rgb():
    palette = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).convert("P")
    decoded = Image.open(io.BytesIO(encode_png(palette)))
    assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), np.asarray(palette.convert("RGB")))


def test_maps_larger_than_a_tile_are_box_averaged_before_colouring():
    values = np.random.default_rng(1).random((192, 128)).astype(np.float32)
    small = shrink_values(values, 96)  # exactly 2x: each value is the mean of a 2x2 block
    expected = values.reshape(96, 2, 64, 2).mean(axis=(1, 3))
    assert small.shape == (96, 64)
    np.testing.assert_allclose(small, expected, rtol=1e-5)
    fits = values[:50, :40]
    assert shrink_values(fits, 96) is fits  # already small enough: left alone (enlarged later, nearest)


def test_feature_map_tiles_use_the_full_resolution_range():
    maps = torch.zeros(1, 192, 192)
    maps[0, 0, 0] = 4.0  # a single hot pixel: averaged away in the tile, but it sets the colour scale
    maps[0, 96:, :] = 1.0
    result = feature_maps(maps, top_k=1)
    assert torch.equal(result.maps, maps)
    image = draw(base.Picture([base.MapTile(result.maps[0].numpy(), "m", "gray")], tile_px=96), ["h"])
    arr = np.asarray(image)
    bright = round(255 * 1.0 / 4.0)  # value 1 on a 0..4 scale
    per_row = (arr == bright).all(-1).sum(1)
    assert per_row[per_row >= 96].tolist() == [96] * 48  # the lower half of the 96 px tile, nothing clipped
