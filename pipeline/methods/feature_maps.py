"""``feature_maps``: a layer's activations for each image, the most active channels first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from pipeline.methods import base
from pipeline.methods.params import changed
from pipeline.methods.registry import register

RANKINGS = ("mean", "max")


@dataclass(frozen=True)
class Params(base.Params):
    top_k: int = field(default=64, metadata={"min": 0, "help": "channels shown, strongest first (0: all)"})
    channels: tuple[int, ...] | None = None  # or an explicit list of channel indices, shown in that order
    rank_by: Literal["mean", "max"] = "mean"  # spatial mean or max activation
    normalize: Literal["tile", "grid"] = "tile"  # each map on its own scale, or one scale for the grid
    cmap: str = field(default="viridis", metadata={"check": "colormap"})
    display: Literal["map", "overlay"] = "map"  # the map alone, or upsampled and blended over the input
    alpha: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # display=overlay: map opacity

    def unused(self) -> dict[str, str]:
        moot = changed(self, "display=map", "alpha") if self.display == "map" else {}
        return {**moot, **changed(self, "explicit channels", "top_k", "rank_by")} if self.channels else moot


@dataclass
class FeatureMaps:
    """``maps`` [k, H, W] raw activations of ``channels``, with the ranking ``scores`` that chose them."""

    maps: torch.Tensor
    channels: list[int]
    scores: list[float]


def feature_maps(
    activation: torch.Tensor, top_k: int = 64, channels: list[int] | None = None, rank_by: str = "mean"
) -> FeatureMaps:
    """Pick channels of one image's activation [C, H, W]: an explicit list, or the top ``top_k`` by ``rank_by``."""
    if activation.dim() != 3:
        raise ValueError(f"expected an activation [C, H, W], got shape {tuple(activation.shape)}")
    if rank_by not in RANKINGS:
        raise ValueError(f"feature_maps.rank_by must be one of {RANKINGS}, got {rank_by!r}")
    act = activation.detach()
    flat = act.flatten(1)
    scores = flat.mean(1) if rank_by == "mean" else flat.amax(1)
    num = act.shape[0]
    if channels:
        bad = [c for c in channels if not -num <= int(c) < num]
        if bad:
            raise ValueError(f"feature_maps.channels {bad} out of range for a layer with {num} channels")
        index = torch.tensor([int(c) % num for c in channels], device=act.device)
    else:
        k = num if top_k is None or top_k <= 0 else min(top_k, num)
        index = torch.topk(scores, k, sorted=True).indices
    maps = act.index_select(0, index).float().cpu()
    return FeatureMaps(maps=maps, channels=index.tolist(), scores=scores[index].float().cpu().tolist())


@register
class FeatureMapsMethod(base.Method):
    """One grid per (layer, image): the input, then the strongest channels through a colormap."""

    name = "feature_maps"
    order = 10
    Params = Params
    description = "a layer's activations for each image"

    def check(self, model: base.ModelInfo) -> None:
        for layer in model.layers:  # explicit channels must exist in every requested layer
            bad = [c for c in self.params.channels or () if not -layer.out_channels <= c < layer.out_channels]
            if bad:
                raise ValueError(
                    f"channels {bad} out of range for layer {layer.name} of {model.name}, which has "
                    f"{layer.out_channels} channels"
                )

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        p = self.params
        outputs = []
        for i in range(view.activation.shape[0]):
            result = feature_maps(view.activation[i], p.top_k, p.channels, p.rank_by)
            maps = result.maps.numpy()
            grid = (float(maps.min()), float(maps.max())) if p.normalize == "grid" else (None, None)
            tiles: list[base.Tile] = [base.ImageTile(view.sources[i], "input")]
            labels = [f"ch {c} · {s:.3g}" for c, s in zip(result.channels, result.scores, strict=True)]
            if p.display == "overlay":
                tiles += [
                    base.OverlayTile(m, view.sources[i], label, p.cmap, p.alpha, *grid)
                    for m, label in zip(maps, labels, strict=True)
                ]
            else:
                tiles += [base.MapTile(m, label, p.cmap, *grid) for m, label in zip(maps, labels, strict=True)]
            header = f"top {len(result.channels)} of {view.activation.shape[1]} channels by {p.rank_by}"
            if p.display == "overlay":
                header += f"; {maps.shape[-2]}×{maps.shape[-1]} maps upsampled over the input, α {p.alpha}"
            outputs.append(
                base.Output(
                    array=maps,
                    picture=base.Picture(tiles, header, p.tile_px, p.columns),
                    image=i,
                    layer=view.layer.name,
                    fields={
                        "channels": result.channels,
                        "scores": result.scores,
                        "shape": list(view.activation.shape[1:]),
                    },
                )
            )
        return outputs
