"""A labelled grid of tiles under a header, composed with numpy and Pillow (no matplotlib figure per tile)."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
MUTED = (90, 90, 90)


# where each tile (a grid) or each row of tiles (rows) lies in the picture, label included: [x, y, w, h] in
# pixels, in ``Image.info`` (so the report can show one channel's tile alone)
TILE_BOXES = "tile_boxes"


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont:
    """matplotlib's DejaVu Sans: always installed, so labels look the same on every machine."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)


def fit_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(width, height) that puts the longer side at ``size`` px, aspect kept."""
    scale = size / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_tile(tile: np.ndarray, size: int) -> Image.Image:
    """Scale a uint8 tile so its longer side is ``size``: nearest when enlarging (pixels stay honest)."""
    image = Image.fromarray(tile)
    h, w = tile.shape[:2]
    new = fit_size(h, w, size)
    if new == (w, h):
        return image
    return image.resize(new, Image.Resampling.NEAREST if size >= max(h, w) else Image.Resampling.BOX)


def shrink_values(values: np.ndarray, size: int) -> np.ndarray:
    """A 2-d float map box-averaged down to its tile size (unchanged when it already fits).

    Averaging the values before the colormap, as matplotlib's ``imshow`` does by default, is what lets a
    64-map grid of 224 px maps colour 96 px tiles instead of 224 px ones.
    """
    h, w = values.shape
    if size >= max(h, w):
        return values
    image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))  # mode "F"
    return np.asarray(image.resize(fit_size(h, w, size), Image.Resampling.BOX))


# A decimal number with a fraction or an exponent (integers such as channel indices are never reworded).
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?(?![\w.])")
ELLIPSIS = "…"


def _shorter_number(match: re.Match, digits: int) -> str:
    """The shortest way to write the number with ``digits`` significant digits, exponents unpadded
    ("-5.02e-05" -> "-5e-5", "-0.000123" -> "-1.2e-4")."""
    text, value = match.group(0), float(match.group(0))
    forms = (f"{value:.{digits}g}", f"{value:.{digits - 1}e}")
    short = min((re.sub(r"e([-+])0*(\d)", r"e\1\2", form).replace("e+", "e") for form in forms), key=len)
    return short if len(short) < len(text) else text


def fit_label(text: str, width_px: float, face: ImageFont.FreeTypeFont) -> str:
    """``text`` within ``width_px``: numbers first lose significant digits, then whole words go from the end
    (with an ellipsis); a number is never cut in the middle."""
    text = printable(text)
    if face.getlength(text) <= width_px:
        return text
    for digits in (2, 1):
        text = _NUMBER.sub(lambda m, d=digits: _shorter_number(m, d), text)
        if face.getlength(text) <= width_px:
            return text
    words = text.split(" ")
    while len(words) > 1:
        words.pop()
        while len(words) > 1 and not any(ch.isalnum() for ch in words[-1]):  # no dangling "·" before the "…"
            words.pop()
        trial = " ".join(words) + ELLIPSIS
        if face.getlength(trial) <= width_px:
            return trial
    word = words[0]
    if _NUMBER.fullmatch(word) or word.lstrip("-+").isdigit():
        return ELLIPSIS  # a lone number that does not fit is left out, not cut
    while word and face.getlength(word + ELLIPSIS) > width_px:
        word = word[:-1]
    return word + ELLIPSIS


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters (a newline in a file name) shown as ``?``: the text layout refuses them."""
    return _CONTROL.sub("?", str(text))


def _wrap(text: str, width_px: int, face: ImageFont.FreeTypeFont) -> list[str]:
    words, lines, line = printable(text).split(" "), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if face.getlength(trial) <= width_px or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return [*lines, line] if line else lines


def compose(
    tiles: list[np.ndarray],
    labels: list[str],
    header: list[str],
    tile_px: int = 96,
    columns: int | None = None,
    font_px: int = 12,
    min_width: int = 480,
) -> Image.Image:
    """Lay ``tiles`` (uint8 [H, W, 3]) out in a grid with a label under each and ``header`` lines on top."""
    if len(tiles) != len(labels):
        raise ValueError("one label per tile")
    n = max(1, len(tiles))
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    pad, label_h = 6, font_px + 6
    cell_w, cell_h = tile_px + pad, tile_px + label_h + pad
    width = max(cols * cell_w + pad, min_width)
    head_font, label_font = font(font_px + 2), font(font_px)
    head_lines = [wrapped for line in header for wrapped in _wrap(line, width - 2 * pad, head_font)]
    head_h = pad + len(head_lines) * (font_px + 6) + pad
    canvas = Image.new("RGB", (width, head_h + rows * cell_h + pad), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(head_lines):
        draw.text((pad, pad + i * (font_px + 6)), line, fill=TEXT if i == 0 else MUTED, font=head_font)
    x0 = (width - cols * cell_w + pad) // 2
    boxes: list[list[int]] = []
    for i, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        r, c = divmod(i, cols)
        image = fit_tile(tile, tile_px)
        x = x0 + c * cell_w + (tile_px - image.width) // 2
        y = head_h + r * cell_h + (tile_px - image.height) // 2
        canvas.paste(image, (x, y))
        text = fit_label(label, tile_px + pad, label_font)
        tx = x0 + c * cell_w + (tile_px - label_font.getlength(text)) / 2
        draw.text((tx, head_h + r * cell_h + tile_px + 2), text, fill=TEXT, font=label_font)
        boxes.append([x0 + c * cell_w, head_h + r * cell_h, tile_px, tile_px + label_h])
    canvas.info[TILE_BOXES] = boxes
    return canvas


def compose_rows(
    rows: list[tuple[list[str], list[np.ndarray], list[str]]],
    header: list[str],
    tile_px: int = 64,
    font_px: int = 12,
    title_px: int = 230,
) -> Image.Image:
    """A tall picture: under ``header``, one row per (title lines, tiles, tile labels), tiles at one common size.

    The rows line up in columns, so a feature at the same place in every row can be followed down the page."""
    pad, label_h, line_h = 6, font_px + 6, font_px + 4
    columns = max((len(tiles) for _, tiles, _ in rows), default=1)
    cell_w = tile_px + pad
    row_h = max(tile_px + label_h, max((len(t) for t, _, _ in rows), default=1) * line_h) + pad
    width = max(title_px + columns * cell_w + pad, 480)
    head_font, text_font = font(font_px + 2), font(font_px)
    head_lines = [wrapped for line in header for wrapped in _wrap(line, width - 2 * pad, head_font)]
    head_h = pad + len(head_lines) * (font_px + 6) + pad
    canvas = Image.new("RGB", (width, head_h + len(rows) * row_h + pad), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(head_lines):
        draw.text((pad, pad + i * (font_px + 6)), line, fill=TEXT if i == 0 else MUTED, font=head_font)
    boxes: list[list[int]] = []
    for r, (title, tiles, labels) in enumerate(rows):
        y0 = head_h + r * row_h
        boxes.append([title_px, y0, max(1, len(tiles) * cell_w - pad), tile_px + label_h])
        if r:
            draw.line([(pad, y0 - pad // 2), (width - pad, y0 - pad // 2)], fill=(225, 225, 225))
        for j, line in enumerate(title):
            text = printable(line)
            while text and text_font.getlength(text) > title_px - pad:
                text = text[:-2] + "…" if len(text) > 2 else ""
            draw.text((pad, y0 + j * line_h), text, fill=TEXT if j == 0 else MUTED, font=text_font)
        for c, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
            image = fit_tile(tile, tile_px)
            x = title_px + c * cell_w + (tile_px - image.width) // 2
            canvas.paste(image, (x, y0 + (tile_px - image.height) // 2))
            text = label
            while text and text_font.getlength(text) > tile_px + pad:
                text = text[:-2] + "…" if len(text) > 2 else ""
            tx = title_px + c * cell_w + (tile_px - text_font.getlength(text)) / 2
            draw.text((tx, y0 + tile_px + 2), text, fill=TEXT, font=text_font)
    canvas.info[TILE_BOXES] = boxes
    return canvas
