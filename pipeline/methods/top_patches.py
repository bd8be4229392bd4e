"""``top_patches`` (dataset examples, as in OpenAI Microscope): per layer, for each shown channel, the ``k`` units
with the highest activation over every image of the run, each shown as the input crop at its receptive field.

``gather`` keeps numbers only, for EVERY channel of the layer: a running top-k of (value, key), where a unit's key
is its image's global index × H·W + y·W + x, plus the sum of each image's channel means and the image count (as
``feature_viz`` gathers them). Memory is O(channels × k) however many images run, and the states of image shards
merge exactly (``merge_states``). Tie order: higher value, then the earlier image (global index), then the smaller
y, then the smaller x. ``finish`` picks the channels with ``feature_viz``'s rule over all the images
(``_channels.choose``), then reads each image a tile needs once again (``FinishView.image``) and crops it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from pipeline.methods import base
from pipeline.methods._channels import choose
from pipeline.methods.params import changed
from pipeline.methods.registry import register

if TYPE_CHECKING:
    from pipeline.models.layers import ConvLayer, ReceptiveField

_NONE_KEY = np.iinfo(np.int64).max  # an empty slot sorts after every unit


def empty_ranking(channels: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, keys) [channels, k] of a ranking that has seen nothing."""
    return np.full((channels, k), -np.inf), np.full((channels, k), _NONE_KEY, dtype=np.int64)


def batch_top(act: torch.Tensor, indices: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's top min(k, N·H·W) units of a batch ``act`` [N, C, H, W] whose images have the global
    ``indices``: (values float64, keys int64), each [C, min(k, N·H·W)], in the stated order.

    A ``topk`` per image and channel (a row) holds every unit that can rank, except where the row's k-th value ties
    with its channel's k-th value over the batch: such rows are scanned whole for the tied units. The few
    candidates are then sorted exactly, by value and then key."""
    n, channels, h, w = act.shape
    a = act.detach().float().reshape(n, channels, h * w)
    per_row = a.topk(min(k, h * w), dim=2)  # [N, C, k']: every channel's top-k values are among these
    if torch.isnan(per_row.values).any():  # NaN sorts above everything in topk: rank it below everything instead
        a = torch.nan_to_num(a, nan=-torch.inf)
        per_row = a.topk(min(k, h * w), dim=2)
    kk = min(k, n * h * w)
    kth = per_row.values.transpose(0, 1).reshape(channels, -1).topk(kk, dim=1).values[:, -1]  # [C]
    tied = per_row.values[:, :, -1] == kth[None, :]  # rows whose top-k may leave out units tied at the threshold
    taken = (per_row.values >= kth[None, :, None]) & ~tied[:, :, None]
    image, channel, slot = taken.nonzero(as_tuple=True)
    pos = per_row.indices[image, channel, slot]
    tie_image, tie_channel = tied.nonzero(as_tuple=True)
    if len(tie_image):
        rows = a[tie_image, tie_channel]  # [R, H·W]
        row, tie_pos = (rows >= kth[tie_channel][:, None]).nonzero(as_tuple=True)
        image = torch.cat([image, tie_image[row]])
        channel = torch.cat([channel, tie_channel[row]])
        pos = torch.cat([pos, tie_pos])
    values = a[image, channel, pos].double().cpu().numpy()
    keys = np.asarray(indices, dtype=np.int64)[image.cpu().numpy()] * (h * w) + pos.cpu().numpy()
    channel = channel.cpu().numpy()
    order = np.lexsort((keys, -values, channel))
    channel = channel[order]
    first = np.searchsorted(channel, np.arange(channels))  # where each channel's candidates start
    keep = order[np.arange(len(order)) - first[channel] < kk]
    return values[keep].reshape(channels, kk), keys[keep].reshape(channels, kk)


def merge_top(values: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best of (``values``, ``keys``) [C, m] in the stated order: higher value, then smaller key."""
    order = np.lexsort((keys, -values), axis=-1)[:, :k]
    return np.take_along_axis(values, order, -1), np.take_along_axis(keys, order, -1)


def unit_of(key: int, h: int, w: int) -> tuple[int, int, int]:
    """(global image index, y, x) of a ranking key."""
    image, rest = divmod(int(key), h * w)
    return image, rest // w, rest % w


def whole_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box of the whole input (a unit whose receptive field is unknown)."""
    return 0, 0, int(size[0]), int(size[1])


@dataclass(frozen=True)
class Params(base.Params):
    k: int = field(default=9, metadata={"min": 1, "max": 100, "help": "top units per channel over all images"})
    channels: tuple[int, ...] | None = field(
        default=None, metadata={"min": 0, "help": "channels to show (null: select); as feature_viz's"}
    )
    max_channels: int = field(default=16, metadata={"min": 1, "max": 512, "help": "channels shown (no list)"})
    select: Literal["auto", "active", "first"] = "auto"  # auto/active: highest mean activation over all images
    tile_px: int = field(default=80, metadata={"min": 16, "max": 2048})

    def unused(self) -> dict[str, str]:
        return changed(self, "explicit channels", "max_channels", "select") if self.channels else {}


@register
class TopPatches(base.Method):
    """Per layer: each shown channel's strongest units over the whole run, as input crops at their receptive field."""

    name = "top_patches"
    order = 85
    Params = Params
    description = "dataset examples: each channel's strongest input patches over all images"
    gathers = True

    @property
    def scope(self) -> base.Scope:
        return base.Scope.LAYER

    @property
    def needs(self) -> base.Needs:
        return base.Needs(activations=True)

    def gather(self, view: base.LayerView, state: dict) -> None:
        """Fold this batch into every channel's running top-k, mean-sum and image count (numbers only)."""
        act = view.activation.detach()
        n, channels, h, w = act.shape
        indices = [int(i) for i in view.indices]
        if not state:
            values, keys = empty_ranking(channels, self.params.k)
            state.update(values=values, keys=keys, mean=np.zeros(channels), count=0)
            state.update(shape=(h, w), input_size=(int(view.x.shape[-2]), int(view.x.shape[-1])))
        means = act.float().mean(dim=(2, 3)).double().cpu().numpy()  # as feature_viz sums them
        batch_values, batch_keys = batch_top(act, indices, self.params.k)
        state["values"], state["keys"] = merge_top(
            np.concatenate([state["values"], batch_values], 1),
            np.concatenate([state["keys"], batch_keys], 1),
            self.params.k,
        )
        state["mean"] = state["mean"] + means.sum(0)
        state["count"] = int(state["count"]) + n

    def merge_states(self, states: list[dict]) -> dict:
        """The state one run over every image would have gathered, from the states of its shards (in order)."""
        return merge_ranked(states, self.params.k)

    def finish(self, view: base.FinishView) -> list[base.Output]:
        """Pick each layer's channels, read every image a tile needs once, and make each layer's rows."""
        p = self.params
        tiles: dict[str, list] = {}  # layer -> per channel: [(rank, value, image, y, x, box)]
        wanted: dict[int, list] = defaultdict(list)  # global image index -> [(layer, row, rank, box)]
        for layer in view.layers:
            state = view.states.get(layer.name, {})
            if not state:
                continue
            h, w = (int(v) for v in state["shape"])
            field_ = usable_field(layer, state)
            rows = []
            for row, channel in enumerate(choose(p, layer.out_channels, state)[0]):
                units = []
                for rank, (value, key) in enumerate(zip(state["values"][channel], state["keys"][channel], strict=True)):
                    if not np.isfinite(value):
                        continue
                    image, y, x = unit_of(key, h, w)
                    box = field_.box(y, x) if field_ is not None else whole_box(tuple(state["input_size"]))
                    units.append((rank, float(value), image, y, x, box))
                    wanted[image].append((layer.name, row, rank, box))
                rows.append(units)
            tiles[layer.name] = rows
        crops: dict[tuple[str, int, int], np.ndarray] = {}
        for image in sorted(wanted):  # each image read once, whatever the number of tiles it gives
            view.advance(0)  # a stop signal takes effect between images
            picture = view.image(image)
            for name, row, rank, (top, left, bottom, right) in wanted[image]:
                crops[(name, row, rank)] = np.array(picture[top:bottom, left:right])
        return [self._output(layer, view, tiles.get(layer.name), crops) for layer in view.layers]

    def _output(self, layer: ConvLayer, view: base.FinishView, rows: list | None, crops: dict) -> base.Output:
        p = self.params
        state = view.states.get(layer.name, {})
        if not state:
            picture = base.RowsPicture([], "no image was seen: no top patches", p.tile_px)
            return base.Output(np.zeros((0, p.k, 0, 0, 3), np.uint8), picture, layer=layer.name, fields={"tiles": []})
        channels, how = choose(p, layer.out_channels, state)
        field_ = usable_field(layer, state)
        picture_rows, tiles_info = [], []
        for row, (channel, units) in enumerate(zip(channels, rows, strict=True)):
            shown: list[base.Tile] = []
            for rank, value, image, y, x, box in units:
                label = view.label(image)
                shown.append(base.ImageTile(crops[(layer.name, row, rank)], f"{value:.3g} · {label}"))
                tiles_info.append(
                    {
                        "channel": channel,
                        "rank": rank,
                        "image": label,
                        "image_index": image,
                        "y": y,
                        "x": x,
                        "box": list(box),
                        "value": value,
                    }
                )
            picture_rows.append(base.Row([f"ch {channel}", f"top {len(shown)}"], shown))
        mine = [crop for (name, _, _), crop in crops.items() if name == layer.name]
        side = max((max(crop.shape[0], crop.shape[1]) for crop in mine), default=0)
        array = np.zeros((len(channels), p.k, side, side, 3), np.uint8)
        for (name, row, rank), crop in crops.items():
            if name == layer.name:
                array[row, rank, : crop.shape[0], : crop.shape[1]] = crop
        rf = field_.text() if field_ is not None else "receptive field unknown: whole input"
        seen = int(state["count"])
        what = "explicit channels" if how == "list" else f"{len(channels)} channels by {how} over all images"
        header = f"top {p.k} units per channel over {seen} images; {what}; crops at the {rf}"
        fields = {
            "channels": list(channels),
            "images_seen": seen,
            "selected_on_images": seen,
            "map_size": [int(v) for v in state["shape"]],
            "receptive_field": None
            if field_ is None
            else {"extent": list(field_.extent), "stride": list(field_.stride), "global": field_.global_context},
            "tiles": tiles_info,
            "array": "crops [channel, rank, side, side, RGB], each at the top left, its size from its box",
        }
        return base.Output(array, base.RowsPicture(picture_rows, header, p.tile_px), layer=layer.name, fields=fields)


def usable_field(layer: ConvLayer, state: dict) -> ReceptiveField | None:
    """The layer's receptive field when it was traced for the input size the images had, else None."""
    field_ = getattr(layer, "receptive", None)
    if field_ is None or tuple(field_.input_size) != tuple(int(v) for v in state["input_size"]):
        return None
    return field_


def merge_ranked(states: list[dict], k: int) -> dict:
    """Fold shard states of ``top_patches`` (ranking, mean-sum, count) into one: exact for the ranking and
    count; the mean-sum adds the shards' sums in order (float rounding aside, the unsharded sum)."""
    full = [s for s in states if s]
    if not full:
        return {}
    shapes = {tuple(int(v) for v in s["shape"]) for s in full}
    if len(shapes) > 1:
        raise ValueError(f"top_patches: shards saw maps of different sizes {sorted(shapes)}")
    values, keys = merge_top(
        np.concatenate([np.asarray(s["values"], np.float64) for s in full], 1),
        np.concatenate([np.asarray(s["keys"], np.int64) for s in full], 1),
        k,
    )
    mean = np.asarray(full[0]["mean"], np.float64)
    for s in full[1:]:
        mean = mean + np.asarray(s["mean"], np.float64)
    return {
        "values": values,
        "keys": keys,
        "mean": mean,
        "count": sum(int(s["count"]) for s in full),
        "shape": tuple(int(v) for v in full[0]["shape"]),
        "input_size": tuple(int(v) for v in full[0]["input_size"]),
    }
