"""``top_patches``: the streaming top-k equals a brute-force ranking over all images in any batch size, ties
included (higher value, earlier image, smaller y, smaller x); each crop is the input region its box names, and
that box is the unit's receptive field; the channel rule is shared."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.engine.finish import Finish
from pipeline.engine.shared import Batch
from pipeline.engine.work import BatchWork
from pipeline.methods._channels import select_channels
from pipeline.methods.base import ModelInfo
from pipeline.methods.top_patches import Params, TopPatches
from pipeline.models.layers import conv_layers
from pipeline.models.receptive import trace

INFO = ModelInfo("tiny", (), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def tiny() -> nn.Sequential:
    """Integer weights on integer images: activations with many exact ties."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2, padding=1))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in (model[0], model[2]):
            conv.weight.copy_(torch.randint(-1, 2, conv.weight.shape, generator=generator).float())
            conv.bias.zero_()
    return model.eval()


def images(n: int = 7, size: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 2, (n, 3, size, size), generator=generator).float()


def sources(x: torch.Tensor) -> list[np.ndarray]:
    return [(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for img in x]


def run_top_patches(model: nn.Module, x: torch.Tensor, batch_size: int, **params) -> dict:
    """The method through the engine's own batch work and finish, ``batch_size`` images at a time."""
    layers = conv_layers(model)
    method = TopPatches(Params(**params))
    states = {method.name: {layer.name: {} for layer in layers}}
    made = []
    pictures = sources(x)
    for start in range(0, len(x), batch_size):
        part = x[start : start + batch_size]
        labels = [f"img{i}" for i in range(start, start + len(part))]
        batch = Batch(INFO, part, pictures[start : start + len(part)], labels)
        BatchWork(model, layers, [method], lambda m, o: made.extend(o), _raise, states=states).run(batch)
    view = Finish(model, INFO, layers, states[method.name], input_size=x.shape[-1])
    return {out.layer: out for out in method.finish(view)}


def _raise(method, layer, exc):
    raise exc


def brute_force(model: nn.Module, x: torch.Tensor, layer: str, channel: int, k: int) -> list[tuple]:
    """(value, image, y, x) of the channel's k strongest units over all images, sorted by the stated tie order."""
    seen = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.setdefault("a", o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    a = seen["a"][:, channel]
    units = [
        (float(a[n, y, x_]), n, y, x_) for n in range(a.shape[0]) for y in range(a.shape[1]) for x_ in range(a.shape[2])
    ]
    return sorted(units, key=lambda u: (-u[0], u[1], u[2], u[3]))[:k]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_streaming_top_k_equals_brute_force_in_any_batch_size_with_ties(batch_size):
    model, x = tiny(), images()
    found = run_top_patches(model, x, batch_size, k=6, channels=(3, 0, 2), tile_px=16)
    for layer in ("0", "2"):
        tiles = found[layer].fields["tiles"]
        for channel in found[layer].fields["channels"]:
            ours = [(t["value"], t["image_index"], t["y"], t["x"]) for t in tiles if t["channel"] == channel]
            expected = brute_force(model, x, layer, channel, 6)
            assert ours == expected, (layer, channel)
            values = [v for v, *_ in expected]
            assert len(set(values)) < len(values)  # ties are exercised
        assert found[layer].fields["images_seen"] == len(x)


def test_crops_are_the_input_region_their_box_names_and_the_box_is_the_receptive_field():
    model, x = tiny(), images()
    found = run_top_patches(model, x, 3, k=4, max_channels=2, select="first")
    pictures = sources(x)
    fields = trace(model, tuple(x.shape[-2:]))
    for layer, out in found.items():
        assert out.fields["channels"] == [0, 1]
        for t in out.fields["tiles"]:
            top, left, bottom, right = t["box"]
            assert t["box"] == list(fields[layer].box(t["y"], t["x"]))
            crop = out.array[out.fields["channels"].index(t["channel"]), t["rank"]]
            np.testing.assert_array_equal(
                crop[: bottom - top, : right - left], pictures[t["image_index"]][top:bottom, left:right]
            )
        rows = out.picture.rows
        assert [len(row.tiles) for row in rows] == [4, 4]


def test_memory_is_the_top_k_only():
    model, x = tiny(), images(9)
    layers = conv_layers(model)
    method = TopPatches(Params(k=2, max_channels=3))
    states = {method.name: {layer.name: {} for layer in layers}}
    for start in range(0, 9, 2):
        batch = Batch(INFO, x[start : start + 2], sources(x[start : start + 2]), [str(i) for i in range(2)])
        BatchWork(model, layers, [method], lambda m, o: None, _raise, states=states).run(batch)
        for state in states[method.name].values():
            assert len(state["kept"]) == 3 and all(len(row) == 2 for row in state["kept"])
            assert state["values"].shape == (3, 2)


def test_no_images_gives_an_empty_artefact_per_layer():
    model = tiny()
    layers = conv_layers(model)
    method = TopPatches()
    outs = method.finish(Finish(model, INFO, layers, {layer.name: {} for layer in layers}))
    assert [o.layer for o in outs] == ["0", "2"] and all(o.array.size == 0 for o in outs)


def test_select_channels_rule():
    mean = torch.tensor([0.1, 0.5, 0.5, -1.0, 0.3])
    assert select_channels(mean, None, 3, "active") == [1, 2, 4]  # ties: lower index first
    assert select_channels(mean, None, 3, "auto") == [1, 2, 4]
    assert select_channels(None, None, 3, "auto", count=5) == [0, 1, 2]
    assert select_channels(mean, None, 9, "first") == [0, 1, 2, 3, 4]
    assert select_channels(mean, [4, -1, 0], 2, "active") == [4, 0]
    with pytest.raises(ValueError, match="out of range"):
        select_channels(mean, [5], 2, "first")
