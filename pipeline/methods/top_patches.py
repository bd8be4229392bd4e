"""``top_patches`` (dataset examples, as in OpenAI Microscope): per layer, for each shown channel, the ``k`` units
with the highest activation over every image of the run, each shown as the input crop at its receptive field.

A running top-k per channel is folded in batch by batch (``gather``), keeping only the crops of the current
top-k: memory is O(channels × k) however many images run. Tie order: higher value, then the earlier image in
plan order, then the smaller y, then the smaller x. The channels are fixed on the first image batch (explicit,
``first``, or ``active``: highest mean activation over that batch), so nothing else has to be kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from pipeline.methods import base
from pipeline.methods._channels import select_channels
from pipeline.methods.params import changed
from pipeline.methods.registry import register

_NONE_KEY = np.iinfo(np.int64).max  # an empty slot sorts after every unit


def empty_ranking(channels: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, keys) [channels, k] of a ranking that has seen nothing."""
    return np.full((channels, k), -np.inf), np.full((channels, k), _NONE_KEY, dtype=np.int64)


def fold(
    values: np.ndarray, keys: np.ndarray, act: torch.Tensor, first: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Merge a batch's activations ``act`` [N, channels, H, W] (images ``first``, ``first`` + 1, ... in plan order)
    into the running top-k (``values``, ``keys``: each unit's key is image × H·W + y·W + x).

    Returns the new (values, keys) and, per channel, which entries were kept: indices into the old k slots
    followed by this batch's candidates (``candidates`` order: see ``batch_candidates``)."""
    k = values.shape[1]
    cand = batch_candidates(act, k, first)
    new_values, new_keys, picks = np.empty_like(values), np.empty_like(keys), []
    for c in range(values.shape[0]):
        v = np.concatenate([values[c], cand[c][0]])
        key = np.concatenate([keys[c], cand[c][1]])
        order = np.lexsort((key, -v))[:k]
        new_values[c], new_keys[c] = v[order], key[order]
        picks.append(order)
    return new_values, new_keys, picks


def batch_candidates(act: torch.Tensor, k: int, first: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per channel, (values, keys) of every unit of this batch at or above its k-th highest value: a superset of
    what the batch can add to the top-k, found without sorting the whole map."""
    _, channels, h, w = act.shape
    flat = torch.nan_to_num(act.detach().float().transpose(0, 1).reshape(channels, -1), nan=-torch.inf)
    floor = flat.topk(min(k, flat.shape[1]), dim=1).values[:, -1:]
    ch, idx = (flat >= floor).nonzero(as_tuple=True)
    vals = flat[ch, idx].double().cpu().numpy()
    ch, idx = ch.cpu().numpy(), idx.cpu().numpy()
    keys = idx + first * h * w
    return [(vals[ch == c], keys[ch == c]) for c in range(channels)]


def unit_of(key: int, h: int, w: int) -> tuple[int, int, int]:
    """(image in plan order, y, x) of a ranking key."""
    image, rest = divmod(int(key), h * w)
    return image, rest // w, rest % w


def whole_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    return 0, 0, size[0], size[1]


@dataclass(frozen=True)
class Params(base.Params):
    k: int = field(default=9, metadata={"min": 1, "max": 100, "help": "top units per channel over all images"})
    channels: tuple[int, ...] | None = None  # or an explicit list of channel indices
    max_channels: int = field(default=16, metadata={"min": 1, "max": 512, "help": "channels shown (no list)"})
    select: Literal["auto", "active", "first"] = "auto"  # auto: active (mean activation over the first batch)
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
        p = self.params
        act = view.activation
        n, count, h, w = act.shape
        if "channels" not in state:
            mean = act.detach().float().mean(dim=(0, 2, 3))
            state["channels"] = select_channels(mean, p.channels, p.max_channels, p.select, count)
            state["selected_on"] = n
            state["values"], state["keys"] = empty_ranking(len(state["channels"]), p.k)
            state["kept"] = [[None] * p.k for _ in state["channels"]]  # (crop, box, label) per slot
            state["shape"], state["seen"] = (h, w), 0
            state["field"] = view.layer.receptive
            state["input_size"] = (int(view.x.shape[-2]), int(view.x.shape[-1]))
        chosen = act.index_select(1, torch.tensor(state["channels"], device=act.device))
        values, keys, picks = fold(state["values"], state["keys"], chosen, state["seen"])
        field_ = state["field"]
        for c, order in enumerate(picks):
            old = state["kept"][c]
            row = []
            for slot, pick in enumerate(order):
                if pick < p.k:
                    row.append(old[pick])
                    continue
                image, y, x = unit_of(keys[c, slot], h, w)
                local = image - state["seen"]
                box = field_.box(y, x) if field_ is not None else whole_box(state["input_size"])
                top, left, bottom, right = box
                crop = np.array(view.sources[local][top:bottom, left:right])  # a copy: the batch goes away
                row.append((crop, box, view.labels[local]))
            state["kept"][c] = row
        state["values"], state["keys"] = values, keys
        state["seen"] += n

    def finish(self, view: base.FinishView) -> list[base.Output]:
        return [self._output(layer, view.states.get(layer.name, {})) for layer in view.layers]

    def _output(self, layer, state: dict) -> base.Output:
        p = self.params
        if "channels" not in state:
            picture = base.RowsPicture([], "no image was seen: no top patches", p.tile_px)
            return base.Output(np.zeros((0, p.k, 0, 0, 3), np.uint8), picture, layer=layer.name, fields={"tiles": []})
        h, w = state["shape"]
        field_ = state["field"]
        rows, tiles_info, crops = [], [], []
        for c, channel in enumerate(state["channels"]):
            tiles: list[base.Tile] = []
            for rank, value in enumerate(state["values"][c]):
                if not np.isfinite(value) or state["kept"][c][rank] is None:
                    continue
                crop, box, label = state["kept"][c][rank]
                image, y, x = unit_of(state["keys"][c, rank], h, w)
                tiles.append(base.ImageTile(crop, f"{value:.3g} · {label}"))
                crops.append((c, rank, crop))
                tiles_info.append(
                    {
                        "channel": channel,
                        "rank": rank,
                        "image": label,
                        "image_index": image,
                        "y": y,
                        "x": x,
                        "box": list(box),
                        "value": float(value),
                    }
                )
            rows.append(base.Row([f"ch {channel}", f"top {len(tiles)}"], tiles))
        side = max((max(crop.shape[0], crop.shape[1]) for _, _, crop in crops), default=0)
        array = np.zeros((len(state["channels"]), p.k, side, side, 3), np.uint8)
        for c, rank, crop in crops:
            array[c, rank, : crop.shape[0], : crop.shape[1]] = crop
        rf = field_.text() if field_ is not None else "receptive field unknown: whole input"
        how = "explicit channels" if p.channels else f"{len(rows)} channels by {p.select} (first batch)"
        header = f"top {p.k} units per channel over {state['seen']} images; {how}; crops at the {rf}"
        fields = {
            "channels": list(state["channels"]),
            "images_seen": state["seen"],
            "selected_on_images": state["selected_on"],
            "map_size": [h, w],
            "receptive_field": None
            if field_ is None
            else {"extent": list(field_.extent), "stride": list(field_.stride), "global": field_.global_context},
            "tiles": tiles_info,
            "array": "crops [channel, rank, side, side, RGB], each at the top left, its size from its box",
        }
        return base.Output(array, base.RowsPicture(rows, header, p.tile_px), layer=layer.name, fields=fields)
