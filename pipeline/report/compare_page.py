"""compare.html: models side by side, for a run or sweep with two or more models.

One row of first-layer filters, then at each relative depth (first conv, 25 %, 50 %, 75 %, last conv) a row of
feature maps, each cell the same image's strongest ``TOP`` maps at that depth, large enough to read (cut out of
the full grid), and rows of Grad-CAM and ``feature_viz`` at that depth when they ran. A column per model, as
wide as the page allows (it scrolls sideways past about six models). Made from the job summaries only, so it
is cheap to rebuild after every job.
"""

from __future__ import annotations

from pipeline.report import layout
from pipeline.report.index_page import models_in_order
from pipeline.report.markup import document, esc, href
from pipeline.report.summary import DEPTHS, MAPS, ROWS, JobSummary

PAGE = "compare.html"


def _depth(model: str, summaries: list[JobSummary]) -> dict:
    """The model's pictures from the first job that has them."""
    for s in summaries:
        part = s.models.get(model)
        if part is not None and (part.depth.get("rows") or part.depth.get("filters")):
            return part.depth
    return {}


def _tops(picture: dict) -> str:
    """The strongest maps, each cut out of the full grid by an SVG viewBox (the PNG loads once per cell)."""
    width, height = picture["tiles"]["size"]
    src = href(picture["png"])
    cuts = "".join(
        f'<svg viewBox="{x} {y} {w} {h}" role="img"><image href="{src}" width="{width}" height="{height}"/></svg>'
        for x, y, w, h in picture["tiles"]["boxes"]
    )
    return f'<div class="tops">{cuts}</div>'


def _cell(picture: dict | None, model: str, what: str) -> str:
    if not picture:
        return '<td class="muted">—</td>'
    alt = esc(f"{model} {what} {picture['layer']} {picture['image']}".strip())
    link = f'<a href="{href(picture["png"])}">'
    if picture.get("tiles"):
        body = f"{link}{_tops(picture)}</a><code>{esc(picture['layer'])}</code> · {link}all maps</a>"
    else:
        body = f'{link}<img loading="lazy" src="{href(picture["thumb"])}" alt="{alt}"></a><code>{esc(picture["layer"])}</code>'
    return f"<td>{body}</td>"


ROW_NAMES = {MAPS: "feature maps, strongest 8"}


def render_compare(title: str, summaries: list[JobSummary]) -> str | None:
    """The page, or None when fewer than two models have something to compare."""
    models = [m for m in models_in_order(summaries) if _depth(m, summaries)]
    if len(models) < 2:
        return None
    found = {m: _depth(m, summaries) for m in models}
    images = [list((found[m].get("rows") or {}).get(MAPS) or {}) for m in models]
    shared = [i for i in images[0] if all(i in other for other in images[1:])] if images else []
    image = shared[0] if shared else None
    head = "".join(f'<th><a href="{href(layout.model_page(m))}">{esc(m)}</a></th>' for m in models)
    rows = [
        "<tr><th>filters, first conv</th>"
        + "".join(_cell(found[m].get("filters"), m, "filters") for m in models)
        + "</tr>"
    ]
    methods = [r for r in ROWS if any(r in (found[m].get("rows") or {}) for m in models)]
    for d, (label, _) in enumerate(DEPTHS):
        for method in methods:
            cells = []
            for m in models:
                per_image = (found[m].get("rows") or {}).get(method) or {}
                chosen = per_image.get(image) if image in per_image else next(iter(per_image.values()), None)
                cells.append(_cell(chosen[d] if chosen else None, m, method))
            name = ROW_NAMES.get(method, method)
            rows.append(f"<tr><th>{esc(name)}, {esc(label)}</th>{''.join(cells)}</tr>")
    note = f"image {esc(image)}" if image else "each model's first image (no image is shared by all of them)"
    header = (
        f'<p><a href="{layout.INDEX}">← report {esc(title)}</a></p><h1>Models side by side</h1>'
        f"<p>{len(models)} models · {note} · rows at relative depth in each model's conv layers; click a cell"
        " for the full picture</p>"
    )
    wide = f"min-width:{130 + 210 * len(models)}px"  # columns of at least ~200 px: readable with 10 models too
    body = (
        f'<div class="wrap"><table class="compare" style="{wide}"><tr><th></th>{head}</tr>{"".join(rows)}</table></div>'
    )
    return document(f"Models side by side: Filter-Map-Insights report {title}", header, body)
