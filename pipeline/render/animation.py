"""An Animation to GIF bytes: every frame drawn like any picture, then mapped onto one shared palette.

One palette for all frames (the colormap's ramp, a gray ramp for text and the frame's own input colours)
keeps the file small and the colours steady from frame to frame; no dithering, so flat areas stay flat.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.methods import base
from pipeline.render.figures import tile_pixels
from pipeline.render.grid import compose
from pipeline.render.normalize import lut

GRAYS = 32


def shared_palette(pictures: list[np.ndarray], cmap: str, own_colours: int = 256 - 160 - GRAYS) -> Image.Image:
    """A 256-colour palette image: 160 steps of ``cmap``, a gray ramp, and the colours of ``pictures`` (the
    photos the frames show, which no colormap covers)."""
    ramp = lut(cmap)[np.linspace(0, 255, 160).round().astype(int)]
    grays = np.repeat(np.linspace(0, 255, GRAYS).round().astype(np.uint8)[:, None], 3, axis=1)
    sample = np.concatenate([p.reshape(-1, 3) for p in pictures] or [grays])[None]
    others = Image.fromarray(sample).quantize(own_colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    extra = np.asarray(others.getpalette()[: own_colours * 3], dtype=np.uint8).reshape(-1, 3)
    colours = np.concatenate([ramp, grays, extra])
    _, first = np.unique(colours, axis=0, return_index=True)
    colours = colours[np.sort(first)][:256]  # distinct entries: the GIF writer maps every frame onto this table
    palette = Image.new("P", (1, 1))
    palette.putpalette(colours.reshape(-1).tolist())
    return palette


def _frame(picture: base.Picture, font_px: int) -> Image.Image:
    tiles = [tile_pixels(t, picture.tile_px) for t in picture.tiles]
    labels = [t.label for t in picture.tiles]
    return compose(tiles, labels, [picture.header], picture.tile_px, picture.columns, font_px, min_width=0)


def gif_bytes(animation: base.Animation, font_px: int = 12) -> bytes:
    """The animation as a looping GIF, one frame every ``animation.seconds``."""
    if not animation.frames:
        raise ValueError("an animation needs at least one frame")
    drawn = [_frame(frame, font_px) for frame in animation.frames]
    first = animation.frames[0].tiles
    photos = [t.rgb for t in first if isinstance(t, base.ImageTile)]
    cmap = next((t.cmap for t in first if isinstance(t, base.MapTile)), "viridis")
    size = (max(f.width for f in drawn), max(f.height for f in drawn))
    padded = []
    for frame in drawn:
        canvas = Image.new("RGB", size, (255, 255, 255))
        canvas.paste(frame, (0, 0))
        padded.append(canvas)
    palette = shared_palette(photos, cmap)
    frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in padded]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=round(animation.seconds * 1000),
        loop=0,
        optimize=False,
        palette=bytes(palette.getpalette()),  # one global colour table; no frame carries its own
    )
    return buffer.getvalue()
