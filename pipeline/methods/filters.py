"""``filters``: a conv layer's learned kernels, straight from its weights (no image, no forward pass)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from pipeline.methods import base
from pipeline.methods.params import changed
from pipeline.methods.registry import register

VIEWS = ("auto", "rgb", "channels", "mean")


@dataclass(frozen=True)
class Params(base.Params):
    max_filters: int = field(default=64, metadata={"min": 0, "help": "filters shown, first ones first (0: all)"})
    view: Literal["auto", "rgb", "channels", "mean"] = "auto"
    max_in_channels: int = field(default=16, metadata={"min": 1, "help": "input slices per filter (view channels)"})
    normalize: Literal["minmax", "signed"] = "minmax"  # rgb tiles: per filter, or gray = 0
    cmap: str = field(default="RdBu_r", metadata={"check": "colormap"})  # diverging, for channels / mean views
    tile_px: int = field(default=64, metadata={"min": 16, "max": 2048})

    def unused(self) -> dict[str, str]:
        because = f"view={self.view}"
        if self.view == "rgb":
            return changed(self, because, "max_in_channels", "cmap")
        if self.view == "mean":
            return changed(self, because, "normalize", "max_in_channels")
        return changed(self, because, "normalize") if self.view == "channels" else {}


@dataclass
class Filters:
    """Kernels to show: ``data`` is [n, c, kh, kw] raw weights; ``view`` says how to read the c axis.

    - ``rgb``: c == 3, one colour tile per filter (only for layers that see 3 input channels per group);
    - ``channels``: c input-channel slices per filter, shown as a small mosaic of signed kernels;
    - ``mean``: c == 1, the filter averaged over its input channels.
    """

    data: torch.Tensor
    indices: list[int]
    view: str
    in_channels_shown: int
    in_channels_total: int


def filters(weight: torch.Tensor, max_filters: int = 64, view: str = "auto", max_in_channels: int = 16) -> Filters:
    """Select the first ``max_filters`` output filters of a conv weight [out, in/groups, kh, kw] (0: all)."""
    if weight.dim() != 4:
        raise ValueError(f"expected a 4-d conv weight, got shape {tuple(weight.shape)}")
    if view not in VIEWS:
        raise ValueError(f"filters.view must be one of {VIEWS}, got {view!r}")
    out_ch, in_ch = weight.shape[:2]
    if view == "auto":
        view = "rgb" if in_ch == 3 else "channels"
    if view == "rgb" and in_ch != 3:
        raise ValueError(f"filters.view=rgb needs 3 input channels per group, this layer has {in_ch}")
    n = out_ch if max_filters <= 0 else min(out_ch, max_filters)
    w = weight[:n].detach().float().cpu()
    if view == "mean":
        w = w.mean(dim=1, keepdim=True)
    elif view == "channels":
        w = w[:, : max(1, max_in_channels)]
    return Filters(
        data=w.clone(), indices=list(range(n)), view=view, in_channels_shown=w.shape[1], in_channels_total=in_ch
    )


@register
class FiltersMethod(base.Method):
    """One grid per layer: RGB filters as colour tiles, other layers as per-input-channel signed mosaics."""

    name = "filters"
    order = 0
    Params = Params
    description = "a layer's learned kernels"

    @property
    def scope(self) -> base.Scope:
        return base.Scope.LAYER

    @property
    def needs(self) -> base.Needs:
        return base.Needs(weights=True)

    def for_layer(self, layer, weight: torch.Tensor) -> base.Output:
        p = self.params
        result = filters(weight, p.max_filters, p.view, p.max_in_channels)
        data = result.data.numpy()
        tiles: list[base.Tile] = []
        for i, w in zip(result.indices, data, strict=True):
            if result.view == "rgb":
                tiles.append(base.RgbTile(w.transpose(1, 2, 0), f"#{i}", p.normalize))
            else:
                tiles.append(base.MosaicTile(w, f"#{i}", p.cmap))
        header = f"{len(result.indices)} of {layer.out_channels} filters, view {result.view}"
        return base.Output(
            array=data,
            picture=base.Picture(tiles, header, p.tile_px, p.columns),
            layer=layer.name,
            fields={"filters": result.indices},
            params={"view": result.view, "in_channels_shown": result.in_channels_shown},
        )
