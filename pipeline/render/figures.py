"""One figure per artefact: method results to (picture, exact float32 array it shows)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from pipeline.methods.feature_maps import FeatureMaps
from pipeline.methods.filters import Filters
from pipeline.render.grid import compose, shrink_values
from pipeline.render.normalize import colorize, minmax, positive, signed, to_uint8

FILTER_NORMALIZE = ("minmax", "signed")
MAP_NORMALIZE = ("tile", "grid")
GRAD_DISPLAY = ("signed", "positive")


def _mosaic(slices: np.ndarray, cmap: str) -> np.ndarray:
    """Signed kernels [c, kh, kw] of one filter as a small colour mosaic, zero at the colormap's centre."""
    c, kh, kw = slices.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    gap = 1 if kh * kw > 1 else 0
    cells = np.full((rows * cols, kh + gap, kw + gap, 3), 255, dtype=np.uint8)  # white gaps and spare cells
    cells[:c, :kh, :kw] = colorize(signed(slices), cmap)
    out = cells.reshape(rows, cols, kh + gap, kw + gap, 3).transpose(0, 2, 1, 3, 4)
    return out.reshape(rows * (kh + gap), cols * (kw + gap), 3)[: rows * (kh + gap) - gap, : cols * (kw + gap) - gap]


def filters_figure(result: Filters, header: list[str], params: dict) -> tuple[Image.Image, np.ndarray]:
    """RGB filters as colour tiles; other layers as per-input-channel mosaics on a diverging colormap."""
    data = result.data.numpy().astype(np.float32)
    tiles = []
    for w in data:
        if result.view == "rgb":
            rgb = np.transpose(w, (1, 2, 0))
            shown = minmax(rgb) if params.get("normalize", "minmax") == "minmax" else signed(rgb)
            tiles.append(to_uint8(shown))
        else:
            tiles.append(_mosaic(w, params.get("cmap", "RdBu_r")))
    labels = [f"#{i}" for i in result.indices]
    image = compose(tiles, labels, header, tile_px=params.get("tile_px", 64), columns=params.get("columns"))
    return image, data


def input_tile(image: torch.Tensor, mean, std) -> np.ndarray:
    """The preprocessed input [3, H, W] with its normalisation undone, as the model sees it."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * s + m).clamp(0, 1)
    return to_uint8(rgb.permute(1, 2, 0).numpy())


def feature_maps_figure(
    result: FeatureMaps, header: list[str], params: dict, source: np.ndarray | None = None
) -> tuple[Image.Image, np.ndarray]:
    """Activation maps through a colormap, each tile scaled alone (``tile``) or all on one scale (``grid``)."""
    maps = result.maps.numpy().astype(np.float32)
    cmap, tile_px = params.get("cmap", "viridis"), params.get("tile_px", 96)
    if params.get("normalize", "tile") == "grid":
        ranges = [(float(maps.min()), float(maps.max()))] * len(maps)
    else:
        ranges = [(float(m.min()), float(m.max())) for m in maps]
    # each map's range comes from its full resolution; only the (smaller) tile is coloured
    tiles = [
        colorize(minmax(shrink_values(m, tile_px), lo, hi), cmap) for m, (lo, hi) in zip(maps, ranges, strict=True)
    ]
    labels = [f"ch {c} · {s:.3g}" for c, s in zip(result.channels, result.scores, strict=True)]
    if source is not None:
        tiles, labels = [source, *tiles], ["input", *labels]
    image = compose(tiles, labels, header, tile_px=tile_px, columns=params.get("columns"))
    return image, maps


def gradients_figure(
    grads: torch.Tensor, labels: list[str], header: list[str], params: dict, source: np.ndarray | None = None
) -> tuple[Image.Image, np.ndarray]:
    """Input gradients [k, 3, H, W] as RGB tiles: ``signed`` (gray = 0) or ``positive`` part, per-tile percentile."""
    data = grads.numpy().astype(np.float32)
    pct = float(params.get("percentile", 99.5))
    norm = signed if params.get("display", "signed") == "signed" else positive
    tiles = [to_uint8(norm(np.transpose(g, (1, 2, 0)), pct)) for g in data]
    if source is not None:
        tiles, labels = [source, *tiles], ["input", *labels]
    image = compose(tiles, labels, header, tile_px=params.get("tile_px", 160), columns=params.get("columns"))
    return image, data
