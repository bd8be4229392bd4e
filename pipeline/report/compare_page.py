"""compare.html: models side by side, for a run or sweep with two or more models.

One row of first-layer filters, then rows at relative depths (first conv, 25 %, 50 %, 75 %, last conv); a column
per model, each cell the same image's feature-map thumbnail at that depth, naming its layer and linking to the
full-size picture; when ``feature_viz`` ran, a row of its pictures at each of those depths too. Made from the job summaries only, so it is cheap to rebuild after every job.
"""

from __future__ import annotations

from pipeline.report import layout
from pipeline.report.index_page import models_in_order
from pipeline.report.markup import document, esc, href
from pipeline.report.summary import DEPTHS, JobSummary

PAGE = "compare.html"


def _depth(model: str, summaries: list[JobSummary]) -> dict:
    """The model's pictures from the first job that has them."""
    for s in summaries:
        part = s.models.get(model)
        if part is not None and (part.depth.get("maps") or part.depth.get("filters") or part.depth.get("viz")):
            return part.depth
    return {}


def _cell(picture: dict | None, model: str, what: str) -> str:
    if not picture:
        return '<td class="muted">—</td>'
    alt = esc(f"{model} {what} {picture['layer']} {picture['image']}".strip())
    return (
        f'<td><a href="{href(picture["png"])}"><img loading="lazy" src="{href(picture["thumb"])}" alt="{alt}"></a>'
        f"<code>{esc(picture['layer'])}</code></td>"
    )


def render_compare(title: str, summaries: list[JobSummary]) -> str | None:
    """The page, or None when fewer than two models have something to compare."""
    models = [m for m in models_in_order(summaries) if _depth(m, summaries)]
    if len(models) < 2:
        return None
    found = {m: _depth(m, summaries) for m in models}
    images = [list(found[m].get("maps") or {}) for m in models]
    shared = [i for i in images[0] if all(i in other for other in images[1:])] if images else []
    image = shared[0] if shared else None
    head = "".join(f'<th><a href="{href(layout.model_page(m))}">{esc(m)}</a></th>' for m in models)
    rows = [
        "<tr><th>filters, first conv</th>"
        + "".join(_cell(found[m].get("filters"), m, "filters") for m in models)
        + "</tr>"
    ]
    for r, (label, _) in enumerate(DEPTHS):
        cells = []
        for m in models:
            maps = found[m].get("maps") or {}
            chosen = maps.get(image) if image else next(iter(maps.values()), None)
            cells.append(_cell(chosen[r] if chosen else None, m, "feature maps"))
        rows.append(f"<tr><th>feature maps, {esc(label)}</th>{''.join(cells)}</tr>")
        if any(found[m].get("viz") for m in models):
            viz = "".join(_cell((found[m].get("viz") or [None] * len(DEPTHS))[r], m, "feature viz") for m in models)
            rows.append(f"<tr><th>feature visualisation, {esc(label)}</th>{viz}</tr>")
    note = f"image {esc(image)}" if image else "each model's first image (no image is shared by all of them)"
    header = (
        f'<p><a href="{layout.INDEX}">← report {esc(title)}</a></p><h1>Models side by side</h1>'
        f"<p>{len(models)} models · {note} · rows at relative depth in each model's conv layers</p>"
    )
    body = f'<table class="compare"><tr><th></th>{head}</tr>{"".join(rows)}</table>'
    return document(f"Models side by side: Filter-Map-Insights report {title}", header, body)
