"""One job's artefacts of one model as a script chunk that the model page's depth explorer loads.

Chromium refuses ``fetch()`` of local files but runs ``<script src>``, so a chunk is a one-line script that hands
the page ready-made (escaped) HTML: ``FMI.chunk({"id": ..., "html": ...});``. Inside: the job's images as
thumbnails to pick from, then one hidden ``section.layer`` per layer in conv order, each holding a figure per
artefact (``data-m`` its method, ``data-image`` its image, empty for per-layer methods such as filters) with
methods in the registry's order, so a plug-in's method lands in place without naming it here; then the per-image
artefacts with no layer (class targets). The page shows one layer and one image at a time; the pictures are
``loading="lazy"`` inside hidden sections, so only those in view are fetched.
"""

from __future__ import annotations

import json
import sys

from pipeline.output.record import Record
from pipeline.report import layout
from pipeline.report.channels import channel_table
from pipeline.report.jobs import Job
from pipeline.report.markup import esc, href, key
from pipeline.report.summary import LEADS, image_name, layer_name

UP = layout.UP_FROM_PAGE  # chunks are shown on a model page, so their links start from report/models/
# What stands for an image among its thumbnails: the first of these that it has (a CAM's first tile is the input).
PICKERS = ("grad_cam", "grad_cam_pp", "layer_cam", "feature_maps")
FACTS = ("shape", "stride", "receptive_field")  # manifest fields that describe a layer, when a record has them


def registry_order() -> list[str]:
    """The method registry's order when it is loaded (always in a run's own process, whose callback builds the
    report, and in ``python -m pipeline.report``); the report never imports it (torch) just for this."""
    registry = sys.modules.get("pipeline.methods.registry")
    try:
        return list(registry.names()) if registry is not None else []
    except Exception:  # noqa: BLE001 - a report never fails for want of the method registry
        return []


def method_ranks(records: list[Record]) -> dict[str, int]:
    """Each method's place: the registry's order, then methods it does not know (a plug-in not imported here)
    in the order the job wrote them first."""
    order = registry_order()
    seen = [m for m in dict.fromkeys(r.method for r in records) if m not in order]
    return {m: i for i, m in enumerate([*order, *seen])}


def _layer_order(records: list[Record]) -> float:
    known = [r.layer_index for r in records if isinstance(r.layer_index, int)]
    return min(known) if known else float("inf")


def layers(records: list[Record]) -> list[tuple[str, list[Record]]]:
    """The records that belong to a layer, per layer in conv order, methods in registry order within each."""
    rank = method_ranks(records)
    found: dict[str, list[Record]] = {}
    for r in records:
        if r.layer:
            found.setdefault(r.layer, []).append(r)
    ordered = sorted(found.items(), key=lambda item: _layer_order(item[1]))
    return [(name, sorted(items, key=lambda r: rank[r.method])) for name, items in ordered]


def _sized(value: object, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(isinstance(v, int) for v in value)


def _fact(value: object) -> str:
    """A layer fact as a person reads it: a list as ``a×b``, a receptive field (``top_patches``' record of it)
    as its extent in pixels, ``+ global`` when the units also see a global pooling."""
    if isinstance(value, list):
        return "×".join(map(str, value))
    if isinstance(value, dict) and isinstance(value.get("extent"), list):
        return "×".join(map(str, value["extent"])) + " px" + (" + global" if value.get("global") else "")
    return str(value)


def _facts(items: list[Record]) -> dict[str, str]:
    """Shape (C×H×W), stride and receptive field of a layer, from whatever its records carry."""
    facts: dict[str, str] = {}
    for r in items:
        for name in FACTS:
            value = r.extra.get(name)
            if value is not None and name not in facts:
                facts[name] = _fact(value)
    if "stride" not in facts:
        shape = next((r.extra["shape"][1:] for r in items if _sized(r.extra.get("shape"), 3)), None)
        shape = shape or next((r.extra["map_size"] for r in items if _sized(r.extra.get("map_size"), 2)), None)
        size = next((r.extra["input_size"] for r in items if _sized(r.extra.get("input_size"), 2)), None)
        if shape and size and shape[0]:
            facts["stride"] = f"{size[0] / shape[0]:g}"
    return facts


def figure(r: Record) -> str:
    """One artefact: its method, its thumbnail (the PNG itself for runs made before thumbnails) that opens the
    full-size PNG, its other files, or its error."""
    label = image_name(r)
    k = key(r.model, layer_name(r), r.method, label, r.image, r.weights)
    head = f"<b>{esc(r.method)}</b>" + (f' <span class="muted">{esc(label)}</span>' if label else "")
    attrs = f'class="card f{"" if r.ok and r.png else " failed"}" data-m="{esc(r.method)}" data-image="{esc(label)}"'
    if not r.ok or not r.png:
        return (
            f'<figure {attrs} data-k="{k} failed"><figcaption>{head}<br>'
            f'<span class="err">failed: {esc(r.error)}</span></figcaption></figure>'
        )
    links = [f'<a href="{href(UP + r.png)}">full size</a>']
    if r.raw:
        links.append(f'<a href="{href(UP + r.raw)}">raw .npy</a>')
    links += [f'<a href="{href(UP + path)}">{esc(name)}</a>' for name, path in r.attached.items()]
    alt = esc(f"{r.model} {r.method} {layer_name(r)} {label}".strip())
    return (
        f'<figure {attrs} data-k="{k}"><figcaption>{head}</figcaption>'
        f'<a class="full" href="{href(UP + r.png)}"><img loading="lazy" src="{href(UP + (r.thumb or r.png))}"'
        f' alt="{alt}" title="{esc(r.image or label)}"></a><figcaption>{" · ".join(links)}</figcaption></figure>'
    )


def pickers(records: list[Record]) -> str:
    """A button per image of the job, with a small picture of it, to choose the image the explorer shows."""
    per_image: dict[str, list[Record]] = {}
    for r in records:
        if r.image_label and r.method not in LEADS:
            per_image.setdefault(r.image_label, []).append(r)
    buttons = []
    for label, items in per_image.items():
        done = [r for r in items if r.ok and r.png and r.layer]
        rank = {m: i for i, m in enumerate(PICKERS)}
        done.sort(key=lambda r: (rank.get(r.method, len(PICKERS)), _layer_order([r])))
        picture = (
            f'<img loading="lazy" src="{href(UP + (done[0].thumb or done[0].png))}" alt="">' if done else "<i></i>"
        )
        title = esc(next((r.image for r in items if r.image), label))
        buttons.append(
            f'<button type="button" class="pick" data-image="{esc(label)}" title="{title}">{picture}'
            f"<span>{esc(label)}</span></button>"
        )
    return f'<div class="picks">{"".join(buttons)}</div>'


def config(job: Job) -> str:
    if not job.config_text:
        return '<p class="muted">no config recorded</p>'
    return (
        f"<details><summary>resolved config of job {esc(job.rel)}</summary><pre>{esc(job.config_text)}</pre></details>"
    )


def section_html(job: Job, records: list[Record]) -> str:
    """The inside of a job's part of a model page: image pickers, one section per layer, per-image artefacts."""
    parts = [pickers(records), '<div class="controls-slot"></div><div class="layers">']
    for i, (name, items) in enumerate(layers(records)):
        facts = _facts(items)
        index = next((r.layer_index for r in items if isinstance(r.layer_index, int)), None)
        data = esc(json.dumps(facts, ensure_ascii=True))
        parts.append(
            f'<section class="layer group" hidden data-i="{i}" data-name="{esc(name)}" data-index="{esc(index)}"'
            f' data-facts="{data}"><div class="panels">{"".join(figure(r) for r in items)}</div>'
            f"{channel_table(items, UP)}</section>"
        )
    parts.append("</div>")
    rank = method_ranks(records)
    per_image = sorted((r for r in records if not r.layer and r.method not in LEADS), key=lambda r: rank[r.method])
    if per_image:
        parts.append(
            '<div class="per-image"><h3>Per image, at no layer: class targets</h3>'
            f'<div class="panels">{"".join(figure(r) for r in per_image)}</div></div>'
        )
    parts.append(config(job))
    return "".join(parts)


def render_chunk(job: Job, records: list[Record]) -> str:
    """The script chunk of one job × model (``records`` from ``Job.by_model``)."""
    data = {"id": layout.section_id(job.rel), "html": section_html(job, records)}
    return f"FMI.chunk({json.dumps(data, ensure_ascii=True)});\n"
