"""``top_patches``: the streaming top-k of every channel equals a brute-force ranking over all images in any batch
size, ties included (higher value, earlier image by global index, smaller y, smaller x); the channels are picked
over all images with ``feature_viz``'s rule; each crop is the input region its box names, read again through
``FinishView.image``; states are numbers only and the merge of shards' states equals one run over every image."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.engine.finish import Finish
from pipeline.engine.shared import Batch
from pipeline.engine.work import BatchWork, with_fields
from pipeline.methods import base
from pipeline.methods._channels import select_channels
from pipeline.methods.base import ModelInfo
from pipeline.methods.feature_viz import FeatureViz
from pipeline.methods.feature_viz import Params as FvParams
from pipeline.methods.top_patches import Params, TopPatches, batch_top
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


def _raise(method, layer, exc):
    raise exc


def gather(model: nn.Module, methods: list, x: torch.Tensor, batch_size: int, first: int = 0) -> dict:
    """Each method's per-layer states after the engine's own batch work over ``x`` (global indices from ``first``)."""
    layers = conv_layers(model)
    states = {m.name: {layer.name: {} for layer in layers} for m in methods}
    pictures = sources(x)
    for start in range(0, len(x), batch_size):
        part = x[start : start + batch_size]
        index = list(range(first + start, first + start + len(part)))
        batch = Batch(INFO, part, pictures[start : start + len(part)], [f"img{i}" for i in index], indices=index)
        BatchWork(model, layers, methods, lambda m, o: None, _raise, states=states).run(batch)
    return states


def finish(
    model: nn.Module, method, states: dict, x: torch.Tensor, reads: list | None = None, traced: bool = True
) -> dict:
    """The method's finish as the engine calls it: layers with their fields (unless not ``traced``), images read
    again by global index."""
    pictures = sources(x)

    def load(index: int) -> np.ndarray:
        if reads is not None:
            reads.append(index)
        return pictures[index]

    layers = with_fields(model, conv_layers(model), tuple(x.shape[-2:])) if traced else conv_layers(model)
    view = Finish(model, INFO, layers, states, input_size=x.shape[-1], load_image=load, label_of=lambda i: f"img{i}")
    return {out.layer: out for out in method.finish(view)}


def run_top_patches(model: nn.Module, x: torch.Tensor, batch_size: int, reads: list | None = None, **params) -> dict:
    method = TopPatches(Params(**params))
    return finish(model, method, gather(model, [method], x, batch_size)[method.name], x, reads)


def activations(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The conv's output for every image, from a plain forward hook (independent of the engine)."""
    seen = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.setdefault("a", o.clone()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["a"]


def brute_force(model: nn.Module, x: torch.Tensor, layer: str, channel: int, k: int) -> list[tuple]:
    """(value, image, y, x) of the channel's k strongest units over all images, sorted by the stated tie order."""
    a = activations(model, x, layer)[:, channel]
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


@pytest.mark.parametrize("kind", ["continuous", "ties", "constant", "nan"])
@pytest.mark.parametrize("shape", [(5, 3, 6, 7), (3, 4, 2, 2), (1, 2, 2, 2)])
def test_a_batchs_top_k_equals_a_full_sort_by_value_then_key(kind, shape):
    generator = torch.Generator().manual_seed(len(kind) * 10 + shape[0])
    act = torch.randn(shape, generator=generator)
    if kind == "ties":
        act = act.round()
    elif kind == "constant":
        act[:, 1] = 0.5
    elif kind == "nan":
        act[0, 0, 0, :] = float("nan")
    n, c, h, w = shape
    indices = [10 * i + 3 for i in range(n)]  # global indices, not the batch's own 0, 1, 2 ...
    values, keys = batch_top(act, indices, 9)
    for channel in range(c):
        units = sorted(
            (-(-np.inf if np.isnan(v) else v), indices[i] * h * w + y * w + x)
            for i in range(n)
            for y in range(h)
            for x in range(w)
            for v in [float(act[i, channel, y, x])]
        )[:9]
        assert [(-v, key) for v, key in units] == list(
            zip(values[channel].tolist(), keys[channel].tolist(), strict=True)
        )


def test_every_channel_is_ranked_with_global_indices_and_memory_is_channels_by_k():
    model, x = tiny(), images(9)
    method = TopPatches(Params(k=3))
    states = gather(model, [method], x, 2, first=100)[method.name]  # a shard whose first image is the run's 100th
    for layer, state in states.items():
        h, w = state["shape"]
        channels = activations(model, x, layer).shape[1]
        assert state["values"].shape == state["keys"].shape == (channels, 3)  # whatever the number of images
        for c in range(channels):
            expected = [(v, 100 + n, y, x_) for v, n, y, x_ in brute_force(model, x, layer, c, 3)]
            keys = state["keys"][c]
            ours = [
                (float(v), int(key) // (h * w), int(key) % (h * w) // w, int(key) % w)
                for v, key in zip(state["values"][c], keys, strict=True)
            ]
            assert ours == expected, (layer, c)


def test_channels_are_picked_over_all_images_as_feature_viz_picks_them():
    model, x = tiny(), images(8)
    x[:2] = -x[:2]  # the first batch unlike the rest, so a first-batch choice would differ
    tp = TopPatches(Params(k=2, max_channels=3, select="active"))
    fv = FeatureViz(FvParams(max_channels=3, select="active", steps=1, size=8, transforms="none"))
    states = gather(model, [tp, fv], x, 2)
    ours = finish(model, tp, states[tp.name], x)
    theirs = finish(model, fv, states[fv.name], x)
    for layer in ("0", "2"):
        mean = activations(model, x, layer).double().mean(dim=(0, 2, 3))
        expected = sorted(range(len(mean)), key=lambda c: (-float(mean[c]), c))[:3]
        first_batch = activations(model, x[:2], layer).double().mean(dim=(0, 2, 3))
        assert ours[layer].fields["channels"] == theirs[layer].fields["channels"] == expected
        assert sorted(range(len(mean)), key=lambda c: (-float(first_batch[c]), c))[:3] != expected
        assert [row.title[0] for row in ours[layer].picture.rows] == [f"ch {c}" for c in expected]


def test_explicit_channels_follow_feature_viz_and_negative_ones_are_refused_at_the_door():
    from pipeline.errors import UserError
    from pipeline.methods.params import parse_params

    model, x = tiny(), images(4)
    found = run_top_patches(model, x, 2, k=2, channels=(4, 1, 4, 9))  # layer "0" has 4 channels, layer "2" has 5
    assert found["0"].fields["channels"] == [1] and found["2"].fields["channels"] == [4, 1]
    assert [row.title[0] for row in found["2"].picture.rows] == ["ch 4", "ch 1"]
    with pytest.raises(UserError, match=r"top_patches.channels\[0\]: -1 is below the minimum 0"):
        parse_params(Params, {"channels": [-1]}, "top_patches")


def test_crops_are_the_input_region_their_box_names_read_once_per_image():
    model, x = tiny(), images()
    reads: list[int] = []
    found = run_top_patches(model, x, 3, reads, k=4, max_channels=2, select="first")
    pictures = sources(x)
    fields = trace(model, tuple(x.shape[-2:]))
    assert sorted(reads) == sorted(set(reads))  # each image read once for all layers
    for layer, out in found.items():
        assert out.fields["channels"] == [0, 1]
        for t in out.fields["tiles"]:
            top, left, bottom, right = t["box"]
            assert t["box"] == list(fields[layer].box(t["y"], t["x"]))
            assert t["image"] == f"img{t['image_index']}"
            crop = out.array[out.fields["channels"].index(t["channel"]), t["rank"]]
            np.testing.assert_array_equal(
                crop[: bottom - top, : right - left], pictures[t["image_index"]][top:bottom, left:right]
            )
        assert [len(row.tiles) for row in out.picture.rows] == [4, 4]


def _savez_roundtrip(state: dict) -> dict:
    """The state through ``np.savez`` without pickle, as shard partials are written: numbers only."""
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {key: loaded[key] for key in loaded.files}


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize("cuts,batch_sizes", [([3], [2, 1]), ([1, 4, 4], [1, 3, 2, 4]), ([0, 7], [2, 1, 3])])
def test_merged_shard_states_equal_one_run_over_all_images_and_finish_the_same(cuts, batch_sizes):
    model, x = tiny(), images(9)
    tp, fv = TopPatches(Params(k=5, max_channels=3)), FeatureViz(FvParams(max_channels=3, steps=1, size=8))
    whole = gather(model, [tp, fv], x, 4)
    edges = [0, *cuts, len(x)]
    parts = [
        gather(model, [tp, fv], x[lo:hi], size, first=lo) if hi > lo else {tp.name: {}, fv.name: {}}
        for lo, hi, size in zip(edges[:-1], edges[1:], batch_sizes, strict=True)
    ]
    for method in (tp, fv):
        merged = {}
        for layer in whole[method.name]:
            shards = [_savez_roundtrip(p[method.name][layer]) if p[method.name] else {} for p in parts]
            merged[layer] = method.merge_states(shards)
            _same_state(merged[layer], whole[method.name][layer])
    merged = {
        layer: tp.merge_states([_savez_roundtrip(p[tp.name][layer]) if p[tp.name] else {} for p in parts])
        for layer in whole[tp.name]
    }
    ours, theirs = finish(model, tp, merged, x), finish(model, tp, whole[tp.name], x)
    for layer, out in theirs.items():
        np.testing.assert_array_equal(ours[layer].array, out.array)
        assert ours[layer].fields == out.fields
        assert json.loads(json.dumps(ours[layer].fields)) == out.fields  # manifest-ready: plain numbers
        assert ours[layer].picture.header == out.picture.header
        assert [r.title for r in ours[layer].picture.rows] == [r.title for r in out.picture.rows]
    loaded = {layer: _savez_roundtrip(state) for layer, state in whole[tp.name].items()}  # as a partial reads
    for out in finish(model, tp, loaded, x, traced=False).values():  # no receptive field: whole input
        assert {tuple(t["box"]) for t in out.fields["tiles"]} == {(0, 0, 12, 12)}
        assert json.loads(json.dumps(out.fields)) == out.fields
    assert tp.merge_states([{}, {}]) == {} and fv.merge_states([]) == {}


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


def test_the_plan_gives_each_image_its_index_in_the_whole_run_in_every_shard(compose_cfg, tmp_path):
    from pipeline.config import settings_from
    from pipeline.plan import make_plan

    for i in range(5):
        (tmp_path / f"p{i}.png").write_bytes(b"")  # never read here
    common = ["models=[alexnet]", "weights=none", "layers=[first]", "methods=[feature_maps]", "batch_size=1"]
    images = "images=[" + ",".join(str(tmp_path / f"p{i}.png") for i in range(5)) + "]"
    whole = make_plan(settings_from(compose_cfg([*common, images])), check_weights=False)
    expected = {image: i for i, image in enumerate(whole.images)}
    for n in (2, 3):
        for i in range(n):
            plan = make_plan(settings_from(compose_cfg([*common, images, f"shard={i}/{n}"])), check_weights=False)
            assert {image: plan.index()[image] for image in plan.images} == {im: expected[im] for im in plan.images}


class IndexProbe(base.Method):
    """Per (layer, image): records ``view.indices`` (a test-local method, never registered)."""

    name = "index_probe"

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        picture = base.Picture([], "", self.params.tile_px)
        return [
            base.Output(np.zeros(1), picture, image=i, layer=view.layer.name, fields={"index": view.indices[i]})
            for i in range(len(view.indices))
        ]


def in_memory_run(compose_cfg, overrides: list[str], methods: list | None = None) -> list:
    """The job ``python run.py OVERRIDES`` runs (with ``methods`` instead when given), on the same ModelRun, in
    this process and without files (the Python API's path): its artefacts (manifest record and array)."""
    import dataclasses

    from pipeline.api import _Collect
    from pipeline.config import settings_from
    from pipeline.engine.sweep import sweep_models
    from pipeline.plan import make_plan

    settings = settings_from(compose_cfg(overrides))
    if methods is not None:
        settings = dataclasses.replace(settings, methods=methods)
    sink = _Collect(save_raw=False)
    sweep_models(settings, make_plan(settings, check_weights=False), sink)
    return sink.artefacts


def test_a_shard_hands_its_methods_each_images_index_in_the_whole_run(compose_cfg, photo_dir):
    args = ["models=[alexnet]", "weights=none", "layers=[first]", f"images=[{photo_dir}]", "predictions=false"]
    found = in_memory_run(compose_cfg, [*args, "methods=[feature_maps]", "batch_size=1", "shard=1/2"], [IndexProbe()])
    photos = sorted(photo_dir.iterdir())
    assert [(a.record["image_label"], a.record["index"]) for a in found] == [(photos[1].stem, 1)]


def test_a_run_crops_the_photos_as_the_model_saw_them(compose_cfg, photo_dir):
    from pipeline.images import load_image
    from pipeline.models import load_model, resolve_weights
    from pipeline.models.custom import normalization
    from pipeline.render.figures import input_tile

    args = ["models=[alexnet]", "weights=none", "layers=[first,last]", f"images=[{photo_dir}]", "predictions=false"]
    args += ["methods=[top_patches]", "top_patches.k=3", "top_patches.max_channels=2", "batch_size=1"]
    found = {a.record["layer"]: a for a in in_memory_run(compose_cfg, args) if a.ok}
    assert set(found) == {"features.0", "features.10"}
    loaded = load_model("alexnet", resolve_weights("alexnet", "none", seed=0))
    mean, std = normalization(loaded.transform)
    photos = sorted(photo_dir.iterdir())
    seen = [input_tile(loaded.transform(load_image(path)), mean, std) for path in photos]
    for artefact in found.values():
        record, array = artefact.record, artefact.array
        assert record["images_seen"] == 2 and len(record["tiles"]) == 2 * 3
        for t in record["tiles"]:
            top, left, bottom, right = t["box"]
            row = record["channels"].index(t["channel"])
            assert t["image"] == photos[t["image_index"]].stem
            np.testing.assert_array_equal(
                array[row, t["rank"], : bottom - top, : right - left], seen[t["image_index"]][top:bottom, left:right]
            )
