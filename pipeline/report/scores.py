"""Which picture to trust: a model's table of attribution methods × (similarity at full randomisation, deletion AUC,
insertion AUC), each cell coloured, with the sanity pictures and the plots, as an HTML fragment for its page.

The numbers come from manifest records whose extras hold ``scores`` rows (what ``sanity`` and ``faithfulness``
write); a job's summary keeps a compact copy (``summary.scored``), so the model page needs no manifest.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.report import layout
from pipeline.report.markup import esc, href
from pipeline.report.summary import SCORE_COLUMNS as COLUMNS

UP = layout.UP_FROM_PAGE


def _colour(value: float, good: str) -> str:
    """Green for a good value, red for a bad one, on [0, 1]."""
    t = min(max(value, 0.0), 1.0)
    goodness = 1 - t if good == "low" else t
    return f"hsl({round(120 * goodness)},70%,80%)"


def table(parts: list[list[dict[str, Any]]]) -> str:
    """Methods × columns, each cell the mean over images (and jobs) with its count; empty when nothing is scored."""
    sums: dict[str, dict[str, list[float]]] = {}
    for part in parts:
        for item in part:
            for row in item["rows"]:
                name = row["method"] if not row.get("layer") else f"{row['method']} @ {row['layer']}"
                cells = sums.setdefault(name, {})
                for k, _, _ in COLUMNS:
                    if isinstance(row.get(k), (int, float)) and not math.isnan(row[k]):
                        cells.setdefault(k, []).append(float(row[k]))
    if not sums:
        return ""
    head = "".join(
        f"<th>{esc(title)} ({'lower' if good == 'low' else 'higher'} is better)</th>" for _, title, good in COLUMNS
    )
    body = []
    for name, cells in sums.items():
        tds = []
        for k, _, good in COLUMNS:
            found = cells.get(k)
            if not found:
                tds.append('<td class="muted">–</td>')
                continue
            mean = sum(found) / len(found)
            tds.append(f'<td style="background:{_colour(mean, good)}" title="{len(found)} value(s)">{mean:.3f}</td>')
        body.append(f"<tr><th>{esc(name)}</th>{''.join(tds)}</tr>")
    return f'<table class="scores"><tr><th>map</th>{head}</tr>{"".join(body)}</table>'


def section(model: str, parts: list[list[dict[str, Any]]]) -> str:
    """The model's scores section: the table, then each scored artefact's picture and plots; empty when none."""
    found = table(parts)
    if not found:
        return ""
    figures = []
    for part in parts:
        for item in part:
            links = [f'<a href="{href(UP + item["png"])}">{esc(item["method"])}</a>']
            plots = ""
            for name, path in item["files"].items():
                links.append(f'<a href="{href(UP + path)}">{esc(name)}</a>')
                plots += f'<a href="{href(UP + path)}"><img loading="lazy" class="plot" src="{href(UP + path)}" alt="{esc(name)}"></a>'
            figures.append(
                f'<figure class="lead f" data-k="{esc(model)} {esc(item["method"])} {esc(item["image"])}">'
                f'<a href="{href(UP + item["png"])}"><img loading="lazy" src="{href(UP + item["thumb"])}"'
                f' alt="{esc(model)} {esc(item["method"])}, {esc(item["image"])}"></a>{plots}'
                f"<figcaption>{esc(item['image'])} · {' · '.join(links)}</figcaption></figure>"
            )
    note = (
        '<p class="muted">Mean over images. A map that stays alike when the weights are randomised (high similarity)'
        " does not explain what the model learnt (Adebayo et al. 2018); deletion and insertion follow RISE"
        " (Petsiuk et al. 2018).</p>"
    )
    return (
        f'<section id="scores" class="group"><h2>Which picture to trust</h2>{found}{note}'
        f'<div class="leads">{"".join(figures)}</div></section>'
    )
