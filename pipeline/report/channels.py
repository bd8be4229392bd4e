"""Per channel, side by side: the tiles that every per-layer picture of a layer shows of one channel (the filter's
weights, its feature visualisation, its top patches over the run...), cut out of the PNGs by CSS.

A per-layer record carries ``tile_boxes`` (where each tile, or each row of tiles, lies in its PNG) and the
channel of each: ``channels`` (methods that pick channels) or ``filters`` (the first filters). No method is named
here: a plug-in's per-layer picture with those two fields joins the table.
"""

from __future__ import annotations

from pipeline.output.record import Record
from pipeline.report.markup import esc, href


def _column(r: Record) -> tuple[dict[int, list[int]], bool] | None:
    """Channel -> its box in ``r``'s PNG, and whether the record picks its channels (else: the first filters)."""
    if r.image or not (r.ok and r.png):
        return None
    boxes, picked = r.extra.get("tile_boxes"), r.extra.get("channels")
    channels = picked if isinstance(picked, list) else r.extra.get("filters")
    if not (isinstance(boxes, list) and isinstance(channels, list) and channels and len(boxes) >= len(channels)):
        return None
    if not all(isinstance(c, int) for c in channels):
        return None
    return {int(c): boxes[i] for i, c in enumerate(channels)}, isinstance(picked, list)


def sprite(png: str, box: list[int]) -> str:
    """One tile of ``png`` (a link from the page) shown alone: its box as a CSS background window."""
    x, y, w, h = (int(v) for v in box)
    return (
        f'<span class="sprite" style="width:{w}px;height:{h}px;'
        f"background-image:url('{href(png)}');background-position:-{x}px -{y}px\"></span>"
    )


def channel_table(items: list[Record], up: str) -> str:
    """The table for one layer's records (empty when no per-layer picture picks channels): a row per channel that
    a picking method shows, a column per per-layer picture, in the order of ``items``."""
    columns = [(r, found) for r in items if (found := _column(r)) is not None]
    rows = [c for _, (boxes, picked) in columns if picked for c in boxes]
    rows = list(dict.fromkeys(rows))
    if not rows:
        return ""
    head = "".join(f"<th>{esc(r.method)}</th>" for r, _ in columns)
    body = []
    for channel in rows:
        cells = []
        for r, (boxes, _) in columns:
            box = boxes.get(channel)
            if box:
                cells.append(f"<td>{sprite(up + r.png, box)}</td>")
            else:  # e.g. a filter beyond the first ones a grid shows: said, not left blank
                cells.append(f'<td class="none" title="{esc(r.method)} does not show channel {channel}">not shown</td>')
        body.append(f"<tr><th>ch {channel}</th>{''.join(cells)}</tr>")
    names = " · ".join(esc(r.method) for r, _ in columns)
    return (
        f'<details class="chan" open><summary>per channel, side by side: {names}</summary>'
        f'<table class="chan"><tr><th>channel</th>{head}</tr>{"".join(body)}</table></details>'
    )
