"""One job's artefacts of one model as a script chunk that the model page loads when the job is opened.

Chromium refuses ``fetch()`` of local files but runs ``<script src>``, so a chunk is a one-line script that hands
the section's ready-made (escaped) HTML to the page: ``FMI.chunk({"id": ..., "html": ...});``. Inside, the
artefacts are grouped layer (in the model's conv order) → method, each a card with a thumbnail that links to
the full-size PNG and the raw ``.npy``.
"""

from __future__ import annotations

import json

from pipeline.output.record import Record
from pipeline.report import layout
from pipeline.report.jobs import Job
from pipeline.report.markup import esc, href, key
from pipeline.report.summary import LEADS, image_name, layer_name

UP = layout.UP_FROM_PAGE  # chunks are shown on a model page, so their links start from report/models/


def _layer_order(records: list[Record]) -> float:
    """Where a layer comes in the model (manifest ``layer_index``); overviews first, class targets last."""
    if any(r.method in LEADS for r in records):
        return float("-inf")
    known = [r.layer_index for r in records if isinstance(r.layer_index, int)]
    return min(known) if known else float("inf")


def groups(records: list[Record]) -> list[tuple[str, list[tuple[str, list[Record]]]]]:
    """The records as layers in conv order, each with its methods in the order they were written."""
    layers: dict[str, dict[str, list[Record]]] = {}
    for r in records:
        layers.setdefault(layer_name(r), {}).setdefault(r.method, []).append(r)
    ordered = sorted(layers.items(), key=lambda item: _layer_order([r for rs in item[1].values() for r in rs]))
    return [(layer, list(methods.items())) for layer, methods in ordered]


def card(r: Record) -> str:
    """One artefact: its thumbnail (the PNG itself for runs made before thumbnails), links, or its error."""
    label = image_name(r)
    k = key(r.model, layer_name(r), r.method, label, r.image, r.weights)
    lines = [f"<b>{esc(label)}</b>" if label else "", esc(r.weights)]
    if not r.ok or not r.png:
        lines.append(f'<span class="err">failed: {esc(r.error)}</span>')
        body = "<br>".join(x for x in lines if x)
        return f'<figure class="card f failed" data-k="{k} failed"><figcaption>{body}</figcaption></figure>'
    links = f'<a href="{href(UP + r.png)}">full size</a>'
    if r.raw:
        links += f' · <a href="{href(UP + r.raw)}">raw .npy</a>'
    for name, path in r.attached.items():
        links += f' · <a href="{href(UP + path)}">{esc(name)}</a>'
    lines.append(links)
    body = "<br>".join(x for x in lines if x)
    alt = esc(f"{r.model} {r.method} {layer_name(r)} {label}")
    return (
        f'<figure class="card f" data-k="{k}"><a href="{href(UP + r.png)}">'
        f'<img loading="lazy" src="{href(UP + (r.thumb or r.png))}" alt="{alt}" title="{esc(r.image or label)}"></a>'
        f"<figcaption>{body}</figcaption></figure>"
    )


def config(job: Job) -> str:
    if not job.config_text:
        return '<p class="muted">no config recorded</p>'
    return (
        f"<details><summary>resolved config of job {esc(job.rel)}</summary><pre>{esc(job.config_text)}</pre></details>"
    )


def section_html(job: Job, records: list[Record]) -> str:
    """The inside of a job's section on a model page."""
    parts = [config(job)]
    for layer, methods in groups(records):
        parts.append(f'<section class="group layer"><h3>{esc(layer)}</h3>')
        for method, items in methods:
            cards = "".join(card(r) for r in items)
            parts.append(
                f'<section class="group method"><h4>{esc(method)}</h4><div class="grid">{cards}</div></section>'
            )
        parts.append("</section>")
    return "".join(parts)


def render_chunk(job: Job, records: list[Record]) -> str:
    """The script chunk of one job × model (``records`` from ``Job.by_model``)."""
    data = {"id": layout.section_id(job.rel), "html": section_html(job, records)}
    return f"FMI.chunk({json.dumps(data, ensure_ascii=True)});\n"
