"""index.html: one self-contained page (inline CSS and JS, relative links) that works from file:// with no server.

Every name that comes from configs, layers or image files is HTML-escaped, and every path in href/src is
URL-quoted, so a file called ``<script>.png`` shows up as text.
"""

from __future__ import annotations

import html
from collections import defaultdict
from urllib.parse import quote

from pipeline.output.record import Record
from pipeline.report.jobs import Job

CLASS_TARGET = "class logit"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 3em;color:#222;background:#fafafa}
header{position:sticky;top:0;background:#fafafa;padding:.6em 0;border-bottom:1px solid #ddd;z-index:1}
h1{font-size:1.3em;margin:.2em 0}h2{margin:1.2em 0 .3em;border-bottom:2px solid #4a6fa5}
h3{margin:.8em 0 .2em;color:#4a6fa5}h4{margin:.5em 0 .2em;color:#555}
#filter{width:28em;max-width:90%;padding:.3em;font-size:1em}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{width:260px;margin:0;background:#fff;border:1px solid #ddd;border-radius:4px;padding:4px}
.card img{width:100%;height:auto;min-height:60px;background:#eee;display:block}
.card figcaption{font-size:12px;word-break:break-word}
.card.failed{border-color:#c33;background:#fff3f3}
.card.missing::after{content:"image file missing";color:#c33;font-weight:bold}
.err{color:#b00}.muted{color:#777}code,pre{font-size:12px}
pre{background:#f0f0f0;padding:.5em;overflow:auto;max-height:30em}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
nav a{margin-right:.8em}
"""

# Registered in <head> so it sees every image's error event: marks cards whose PNG is gone.
BROKEN_SCRIPT = """
document.addEventListener("error",function(e){var t=e.target;if(t&&t.tagName==="IMG"){t.classList.add("broken");
var c=t.closest(".card");if(c){c.classList.add("missing");}}},true);
"""

FILTER_SCRIPT = """
(function(){
var box=document.getElementById("filter"),shown=document.getElementById("shown");
var items=[].slice.call(document.querySelectorAll(".f")),groups=[].slice.call(document.querySelectorAll(".group"));
var total=document.querySelectorAll(".card").length;
function apply(){
 var terms=box.value.toLowerCase().split(/\\s+/).filter(Boolean),n=0;
 items.forEach(function(el){var k=el.getAttribute("data-k")||"";
  var ok=terms.every(function(t){return k.indexOf(t)>=0;});el.hidden=!ok;
  if(ok&&el.classList.contains("card")){n++;}});
 groups.forEach(function(g){g.hidden=terms.length>0&&!g.querySelector(".f:not([hidden])");});
 shown.textContent=n+" of "+total+" artefacts shown";
}
box.addEventListener("input",apply);apply();
})();
"""


def esc(value: object) -> str:
    """HTML-escape any value for text and attribute positions (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def href(path: str) -> str:
    """A relative POSIX path as a URL-quoted, attribute-safe href/src."""
    return esc(quote(path))


def _key(*parts: object) -> str:
    return esc(" ".join(str(p) for p in parts if p is not None).lower())


def _short_labels(jobs: list[Job]) -> dict[str, str]:
    """Each job's directory plus only the overrides that differ between jobs (``0: models=alexnet``)."""
    if len(jobs) < 2:
        return {}
    common = set.intersection(*(set(job.overrides) for job in jobs))
    labels = {}
    for job in jobs:
        own = [o for o in job.overrides if o not in common]
        labels[job.rel] = f"{job.rel}: {' '.join(own)}" if own else job.rel
    return labels


def _dedupe(jobs: list[Job]) -> list[Record]:
    """Every manifest line, the last one winning where a job wrote the same artefact twice (a rerun)."""
    latest: dict[tuple, Record] = {}
    for job in jobs:
        for r in job.records:
            latest[(r.job, r.model, r.method, r.layer, r.image_label)] = r
    return list(latest.values())


def _card(r: Record, job_label: str | None) -> str:
    label = r.image_label or ("filters" if r.method == "filters" else "")
    key = _key(r.model, r.layer or CLASS_TARGET, r.method, label, r.job, r.weights)
    lines = [f"<b>{esc(label)}</b>" if label else "", esc(r.weights)]
    if job_label:
        lines.append(f'<span class="muted">job {esc(job_label)}</span>')
    if not r.ok or not r.png:
        lines.append(f'<span class="err">failed: {esc(r.error)}</span>')
        body = "<br>".join(x for x in lines if x)
        return f'<figure class="card f failed" data-k="{key} failed"><figcaption>{body}</figcaption></figure>'
    links = f'<a href="{href(r.png)}">full size</a>'
    if r.raw:
        links += f' · <a href="{href(r.raw)}">raw .npy</a>'
    lines.append(links)
    body = "<br>".join(x for x in lines if x)
    alt = esc(f"{r.model} {r.method} {r.layer or CLASS_TARGET} {label}")
    return (
        f'<figure class="card f" data-k="{key}"><a href="{href(r.png)}">'
        f'<img loading="lazy" src="{href(r.png)}" alt="{alt}" title="{esc(r.image or label)}"></a>'
        f"<figcaption>{body}</figcaption></figure>"
    )


def _percent(prob: object) -> str:
    try:
        return f"{100 * float(prob):.1f}%"
    except (TypeError, ValueError):
        return esc(prob)


def _predictions(model: str, tables: list[tuple[Job, dict]], labels: dict[str, str]) -> str:
    rows = []
    for job, table in tables:
        for image_label, top in table.items():
            cells = "".join(
                f"<td>{esc(p.get('class_name'))} <span class='muted'>#{esc(p.get('class_index'))} "
                f"{_percent(p.get('prob'))}</span></td>"
                for p in (top if isinstance(top, list) else [])
                if isinstance(p, dict)
            )
            job_cell = f"<td>{esc(labels[job.rel])}</td>" if labels else ""
            rows.append(
                f'<tr class="f" data-k="{_key(model, image_label, job.rel)}">{job_cell}<td>{esc(image_label)}</td>{cells}</tr>'
            )
    head = ("<th>job</th>" if labels else "") + "<th>image</th>" + "".join(f"<th>top {i}</th>" for i in range(1, 6))
    return (
        f"<details open><summary>Top-5 predictions of {esc(model)}</summary>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table></details>"
    )


def _layer_order(methods: dict) -> float:
    """Layers in the model's own conv order (manifest ``layer_index``); class-logit targets last."""
    indices = [r.layer_index for items in methods.values() for r in items]
    known = [i for i in indices if isinstance(i, int)]
    return min(known) if known else float("inf")


def _models(records: list[Record], jobs: list[Job]) -> list[tuple[str, str]]:
    grouped: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        grouped[str(r.model)][r.layer or CLASS_TARGET][str(r.method)].append(r)
    predictions: dict[str, list] = defaultdict(list)
    for job in jobs:
        for model, table in job.predictions.items():
            if isinstance(table, dict):
                predictions[str(model)].append((job, table))
    labels = _short_labels(jobs)
    out = []
    for m, model in enumerate(dict.fromkeys([*grouped, *predictions])):
        layers = grouped.get(model, {})
        count = sum(len(v) for layer in layers.values() for v in layer.values())
        parts = [
            f'<section class="group model" id="m{m}"><h2>{esc(model)} <small class="muted">{count} artefacts</small></h2>'
        ]
        if predictions.get(model):
            parts.append(_predictions(model, predictions[model], labels))
        for layer, methods in sorted(layers.items(), key=lambda item: _layer_order(item[1])):
            parts.append(f'<section class="group layer"><h3>{esc(layer)}</h3>')
            for method, items in methods.items():
                cards = "".join(_card(r, labels.get(r.job)) for r in items)
                parts.append(
                    f'<section class="group method"><h4>{esc(method)}</h4><div class="grid">{cards}</div></section>'
                )
            parts.append("</section>")
        parts.append("</section>")
        out.append((model, "".join(parts)))
    return out


def _failures(records: list[Record], jobs: list[Job]) -> str:
    failed = [r for r in records if not r.ok]
    failed_jobs = [job for job in jobs if job.state.upper() == "FAILED"]
    items = [
        f'<li class="f" data-k="{_key(job.rel, job.label, "failed job")}">job <b>{esc(job.label)}</b> failed: '
        f'<span class="err">{esc(job.status.get("error"))}</span></li>'
        for job in failed_jobs
    ]
    for r in failed:
        where = " · ".join(esc(x) for x in (r.model, r.layer or CLASS_TARGET, r.method, r.image_label) if x)
        key = _key(
            r.model,
            r.layer or CLASS_TARGET,
            r.method,
            r.image_label,
            r.job,
            "failed",
        )
        context = [f"job {r.job}" if r.job not in (None, ".") else "", r.image or ""]
        context_text = ", ".join(x for x in context if x)
        muted = f' <span class="muted">({esc(context_text)})</span>' if context_text else ""
        items.append(f'<li class="f" data-k="{key}">{where}{muted}: <span class="err">{esc(r.error)}</span></li>')
    title = f"Failures: {len(failed)} artefact(s), {len(failed_jobs)} job(s)"
    body = f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">none</p>'
    return f'<section id="failures"><h2>{esc(title)}</h2>{body}</section>'


def _jobs(jobs: list[Job]) -> str:
    rows = []
    for job in jobs:
        counts = job.run.get("counts") or {}
        prefix = "" if job.rel == "." else job.rel + "/"
        links = [f'<a href="{href(prefix + "run.json")}">run.json</a>'] if job.run else []
        if job.has_config_file:
            links.append(f'<a href="{href(prefix + "config.resolved.yaml")}">config.resolved.yaml</a>')
        config = (
            f"<details><summary>resolved config of job {esc(job.rel)}</summary><pre>{esc(job.config_text)}</pre></details>"
            if job.config_text
            else '<span class="muted">no config recorded</span>'
        )
        ok = sum(r.ok for r in job.records)
        rows.append(
            f"<tr><td>{esc(job.label)}</td><td>{esc(job.state)}</td>"
            f"<td>{ok} ok, {len(job.records) - ok} failed, {esc(counts.get('planned', '?'))} planned</td>"
            f'<td>{" · ".join(links)}</td></tr><tr><td colspan="4">{config}</td></tr>'
        )
    return (
        '<section id="jobs"><h2>Jobs and their resolved configs</h2><table><tr><th>job</th><th>status</th>'
        f"<th>artefacts</th><th>files</th></tr>{''.join(rows)}</table></section>"
    )


def render_page(title: str, jobs: list[Job]) -> str:
    """The whole report page for ``jobs`` (from pipeline.report.index.collect)."""
    records = _dedupe(jobs)
    ok = sum(r.ok for r in records)
    models = _models(records, jobs)
    nav = "".join(f'<a href="#m{i}">{esc(name)}</a>' for i, (name, _) in enumerate(models))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Filter-Map-Insights report: {esc(title)}</title><style>{STYLE}</style><script>{BROKEN_SCRIPT}</script></head>
<body><header><h1>Filter-Map-Insights report: {esc(title)}</h1>
<p>{len(jobs)} job(s) · {ok} artefact(s) ok · {len(records) - ok} failed</p>
<input id="filter" type="search" placeholder="filter by model, layer, method, image, job…" aria-label="filter">
<span id="shown" class="muted"></span>
<nav>{nav}<a href="#failures">failures</a><a href="#jobs">jobs</a><a href="index.jsonl">index.jsonl</a></nav></header>
{_failures(records, jobs)}
{"".join(section for _, section in models)}
{_jobs(jobs)}
<script>{FILTER_SCRIPT}</script></body></html>
"""
