"""The report's per-channel view: every per-layer picture records where each of its tiles lies in its PNG, and a
layer's channels are shown side by side by cutting those boxes out of the PNGs."""

from __future__ import annotations

import re

import numpy as np

from pipeline.output.record import Record
from pipeline.render.grid import TILE_BOXES, compose, compose_rows, fit_tile
from pipeline.report.channels import channel_table


def _tiles(n: int, side: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def test_a_grid_box_holds_exactly_its_tile_and_a_row_box_every_tile_of_its_row():
    tiles = _tiles(7)
    image = compose(tiles, [f"ch {i}" for i in range(7)], ["header", "second line"], tile_px=32, columns=3)
    pixels = np.asarray(image)
    boxes = image.info[TILE_BOXES]
    assert len(boxes) == 7
    for tile, (x, y, w, h) in zip(tiles, boxes, strict=True):
        assert w == 32 and h == 32 + 18  # the tile and its label under it
        fitted = np.asarray(fit_tile(tile, 32))
        np.testing.assert_array_equal(pixels[y : y + 32, x : x + 32], fitted)
    rows = [(["a"], tiles[:2], ["", ""]), (["b"], tiles[2:5], ["", "", ""])]
    image = compose_rows(rows, ["header"], tile_px=20)
    pixels = np.asarray(image)
    for (_, row_tiles, _), (x, y, w, h) in zip(rows, image.info[TILE_BOXES], strict=True):
        for j, tile in enumerate(row_tiles):
            left = x + j * 26  # tile_px + the 6-px gap
            np.testing.assert_array_equal(pixels[y : y + 20, left : left + 20], np.asarray(fit_tile(tile, 20)))
        assert x + w <= image.width and w == len(row_tiles) * 26 - 6 and h == 20 + 18


def _record(method: str, png: str, **extra) -> Record:
    return Record.from_json(
        {"model": "m", "weights": "w", "method": method, "layer": "conv", "image": None, "status": "ok", "png": png}
        | extra
    )


def test_the_table_has_a_row_per_picked_channel_and_each_cell_is_that_channels_box():
    filters = _record(
        "filters", "m/filters.png", filters=[0, 1, 2], tile_boxes=[[0, 0, 5, 6], [5, 0, 5, 6], [10, 0, 5, 6]]
    )
    viz = _record("feature_viz", "m/fv.png", channels=[2, 7], tile_boxes=[[1, 2, 3, 4], [11, 12, 13, 14]])
    patches = _record("top_patches", "m/tp.png", channels=[7, 2], tile_boxes=[[0, 40, 90, 20], [0, 70, 90, 20]])
    html = channel_table([filters, viz, patches], "../")
    rows = re.findall(r"<tr><th>ch (\d+)</th>(.*?)</tr>", html)
    assert [int(c) for c, _ in rows] == [2, 7]  # the picking methods' channels, first seen first
    cells = {int(c): re.findall(r"<td[^>]*>(.*?)</td>", body) for c, body in rows}
    box = re.compile(
        r"width:(\d+)px;height:(\d+)px;background-image:url\('([^']*)'\);background-position:-(\d+)px -(\d+)px"
    )

    def parsed(cell: str):
        found = box.search(cell)
        return None if found is None else (found[3], [int(found[4]), int(found[5]), int(found[1]), int(found[2])])

    assert [parsed(c) for c in cells[2]] == [
        ("../m/filters.png", [10, 0, 5, 6]),
        ("../m/fv.png", [1, 2, 3, 4]),
        ("../m/tp.png", [0, 70, 90, 20]),
    ]
    assert parsed(cells[7][0]) is None and cells[7][0] == "not shown"  # not among the first filters shown
    assert channel_table([filters], "../") == ""  # no method picked channels: the grid alone says it all


def test_a_layers_receptive_field_reads_as_pixels_in_the_explorers_facts():
    from pipeline.report.chunk import _facts

    patches = _record(
        "top_patches", "m/tp.png", receptive_field={"extent": [403, 403], "stride": [32, 32], "global": True}
    )
    assert _facts([patches])["receptive_field"] == "403×403 px + global"
