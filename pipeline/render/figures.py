"""A method's Picture to pixels: each tile kind drawn by one small function, then laid out by ``grid.compose``."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from pipeline.methods import base
from pipeline.render.grid import compose, compose_rows, fit_size, shrink_values
from pipeline.render.normalize import colorize, minmax, positive, signed, to_uint8


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


def _image(tile: base.ImageTile, tile_px: int) -> np.ndarray:
    return tile.rgb


def _map(tile: base.MapTile, tile_px: int) -> np.ndarray:
    # the colour scale comes from the full-resolution map; only the (smaller) tile is coloured
    values = np.asarray(tile.values, dtype=np.float32)
    lo = float(values.min()) if tile.lo is None else tile.lo
    hi = float(values.max()) if tile.hi is None else tile.hi
    return colorize(minmax(shrink_values(values, tile_px), lo, hi), tile.cmap)


def _rgb(tile: base.RgbTile, tile_px: int) -> np.ndarray:
    values = np.asarray(tile.values, dtype=np.float32)
    return _three(to_uint8(minmax(values) if tile.normalize == "minmax" else signed(values)))


def _mosaic_tile(tile: base.MosaicTile, tile_px: int) -> np.ndarray:
    return _mosaic(np.asarray(tile.slices, dtype=np.float32), tile.cmap)


def _signal(tile: base.SignalTile, tile_px: int) -> np.ndarray:
    norm = signed if tile.display == "signed" else positive
    return _three(to_uint8(norm(np.transpose(np.asarray(tile.values, dtype=np.float32), (1, 2, 0)), tile.percentile)))


def upsample(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 2-d map resized bilinearly (align_corners=False) to ``height`` × ``width``."""
    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, (height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def _overlay(tile: base.OverlayTile, tile_px: int) -> np.ndarray:
    values = np.asarray(tile.values, dtype=np.float32)
    lo = float(values.min()) if tile.lo is None else tile.lo
    hi = float(values.max()) if tile.hi is None else tile.hi
    width, height = fit_size(*tile.source.shape[:2], max(tile_px, 1))
    source = np.asarray(Image.fromarray(tile.source).resize((width, height), Image.Resampling.BILINEAR))
    heat = colorize(minmax(upsample(values, height, width), lo, hi), tile.cmap).astype(np.float32)
    blended = (1 - tile.alpha) * source.astype(np.float32) + tile.alpha * heat
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


_DRAW: dict[type, Callable[..., np.ndarray]] = {
    base.ImageTile: _image,
    base.MapTile: _map,
    base.RgbTile: _rgb,
    base.MosaicTile: _mosaic_tile,
    base.SignalTile: _signal,
    base.OverlayTile: _overlay,
}


def tile_pixels(tile: base.Tile, tile_px: int) -> np.ndarray:
    """One tile as uint8 RGB [H, W, 3] (before it is fitted to ``tile_px``)."""
    return _DRAW[type(tile)](tile, tile_px)


def header_lines(
    model: str, method: str, where: str, weights: str, image: str | None = None, extra: str = ""
) -> list[str]:
    """The two header lines every picture carries: what it shows, and from which weights and image."""
    second = f"weights: {weights}" + (f" · image: {image}" if image is not None else "")
    return [f"{model} · {method} · {where}", second + (f" · {extra}" if extra else "")]


def draw(picture: base.Picture | base.RowsPicture, header: list[str], font_px: int = 12) -> Image.Image:
    """The whole picture: every tile drawn, labelled and laid out under ``header`` (a grid, or rows)."""
    if isinstance(picture, base.RowsPicture):
        rows = [
            (list(row.title), [tile_pixels(t, picture.tile_px) for t in row.tiles], [t.label for t in row.tiles])
            for row in picture.rows
        ]
        return compose_rows(rows, header, tile_px=picture.tile_px, font_px=font_px)
    tiles = [tile_pixels(t, picture.tile_px) for t in picture.tiles]
    labels = [t.label for t in picture.tiles]
    return compose(tiles, labels, header, tile_px=picture.tile_px, columns=picture.columns, font_px=font_px)


def input_tile(image: torch.Tensor, mean, std) -> np.ndarray:
    """The preprocessed input [3, H, W] (or [1, H, W], shown gray) with its normalisation undone, as the model
    sees it."""
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    rgb = (image.detach().float().cpu() * s + m).clamp(0, 1)
    return _three(to_uint8(rgb.permute(1, 2, 0).numpy()))


def _three(pixels: np.ndarray) -> np.ndarray:
    """[H, W, 1] (a grayscale model's input or input gradient) as [H, W, 3] gray; [H, W, 3] as it is."""
    return np.repeat(pixels, 3, axis=-1) if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels
