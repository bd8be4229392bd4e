"""Display normalisations, each chosen on purpose and recorded in the manifest. Arrays in, [0, 1] arrays out."""

from __future__ import annotations

from functools import lru_cache

import matplotlib
import numpy as np

_EPS = 1e-12


def minmax(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Stretch [lo, hi] (default: the array's own range) to [0, 1]; a constant array maps to 0."""
    lo = float(x.min()) if lo is None else lo
    hi = float(x.max()) if hi is None else hi
    if hi - lo < _EPS:
        return np.zeros_like(x, dtype=np.float32)
    return np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)


def _scale(magnitudes: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of the non-zero magnitudes: a signal confined to a small receptive field (most of
    the tile exactly zero) is scaled by its own values, not blanked by a percentile that lands on zeros."""
    nonzero = magnitudes[magnitudes > 0]
    return float(np.percentile(nonzero, percentile)) if nonzero.size else 0.0


def signed(x: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    """Zero at mid-gray: divide by the ``percentile`` of |x| and clip, so sign and relative size stay visible."""
    scale = _scale(np.abs(x), percentile)
    if scale < _EPS:
        return np.full(x.shape, 0.5, dtype=np.float32)
    return (0.5 + 0.5 * np.clip(x / scale, -1, 1)).astype(np.float32)


def positive(x: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """Only the positive part, scaled by its ``percentile`` and clipped to [0, 1]."""
    pos = np.clip(x, 0, None)
    scale = _scale(pos, percentile)
    if scale < _EPS:
        return np.zeros(x.shape, dtype=np.float32)
    return np.clip(pos / scale, 0, 1).astype(np.float32)


@lru_cache(maxsize=32)
def lut(cmap: str) -> np.ndarray:
    """A colormap as 256 uint8 RGB rows (cached)."""
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from None
    return (colormap(np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def colorize(values: np.ndarray, cmap: str) -> np.ndarray:
    """Map [0, 1] values [H, W] to uint8 RGB [H, W, 3] through a matplotlib colormap."""
    index = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    return np.take(lut(cmap), index, axis=0)  # take, not fancy indexing: 3-4x faster on whole grids


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8, channels last."""
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
