"""index.html, the light first page: per-model counts and links, predictions, failures and the jobs.

It embeds no artefact (one small picture per model at most), so it opens at once whatever the size of the sweep;
the artefacts are on the model pages.
"""

from __future__ import annotations

from pipeline.report import layout
from pipeline.report.markup import document, esc, filter_box, href, key, predictions
from pipeline.report.summary import CLASS_TARGET, JobSummary, real_layers

MAX_LISTED = 200  # failed artefacts listed here; the model pages show every one
MAX_PREDICTIONS = 50  # rows of a model's predictions here; its page has them all
FINE = {"COMPLETED", "FINISHED", "RUNNING", "UNKNOWN"}  # job states that are not a failure of the job


def models_in_order(summaries: list[JobSummary]) -> list[str]:
    """Every model, in the order the jobs (in natural order) first ran it."""
    return list(dict.fromkeys(m for s in summaries for m in s.models))


def failed_job(s: JobSummary) -> bool:
    """A job that did not end well (failed, refused, interrupted, ...), whatever it wrote."""
    return s.state.upper() not in FINE


def _model_card(model: str, mine: list[JobSummary]) -> str:
    """A model's card: a picture readable at card size, and counts that each say what they count."""
    page = href(layout.model_page(model))
    parts = [s.models[model] for s in mine]
    ok, failed = sum(p.ok for p in parts), sum(p.failed for p in parts)
    first = next((p.preview for p in parts if p.preview), None)
    picture = (
        f'<a href="{page}"><img loading="lazy" src="{href(first["src"])}" alt="{esc(first["alt"])}"></a>'
        f'<figcaption class="muted">{esc(first.get("what") or first["alt"])}</figcaption>'
        if first
        else '<p class="muted">no picture</p>'
    )
    layers = len({layer for p in parts for layer in real_layers(p.layers)})
    images = len({image for p in parts for image in p.images})
    methods = list(dict.fromkeys(m for p in parts for m in p.methods))
    err = ' class="err"' if failed else ""
    counts = (
        f"<li>{layers} conv layer(s) visualised · {images} image(s)</li>"
        f"<li>{len(methods)} method(s): {esc(', '.join(methods))}</li>"
        f"<li>{ok} artefact(s) (pictures) written, <span{err}>{failed} failed</span>, in {len(mine)} job(s)</li>"
    )
    return (
        f'<figure class="model f" data-k="{key(model, *methods)}"><h3><a href="{page}">{esc(model)}</a> '
        f'<span class="muted">→ its depth explorer</span></h3>{picture}<ul>{counts}</ul></figure>'
    )


def models_table(summaries: list[JobSummary]) -> str:
    cards = [_model_card(m, [s for s in summaries if m in s.models]) for m in models_in_order(summaries)]
    if not cards:
        return '<section id="models"><h2>Models</h2><p class="muted">no artefact yet</p></section>'
    return f'<section id="models" class="group"><h2>Models</h2><div class="cards">{"".join(cards)}</div></section>'


def predictions_section(summaries: list[JobSummary], labels: dict[str, str]) -> str:
    models = dict.fromkeys(m for s in summaries for m in s.predictions)
    tables = [predictions(m, summaries, labels, MAX_PREDICTIONS, href(layout.model_page(m))) for m in models]
    tables = [t for t in tables if t]
    if not tables:
        return ""
    return f'<section id="predictions"><h2>Top-5 predictions</h2>{"".join(tables)}</section>'


def failures_section(summaries: list[JobSummary], labels: dict[str, str]) -> str:
    bad_jobs = [s for s in summaries if failed_job(s)]
    items = [
        f'<li class="f" data-k="{key(s.rel, s.label, s.state, "failed job")}">job <b>{esc(s.label)}</b> '
        f'{esc(s.state.lower())}: <span class="err">{esc(s.error or "no error recorded")}</span></li>'
        for s in bad_jobs
    ]
    total = sum(s.failed for s in summaries)
    listed = 0
    for s in summaries:
        for f in s.failures:
            if listed == MAX_LISTED:
                break
            listed += 1
            where = " · ".join(esc(x) for x in (f["model"], f["layer"] or CLASS_TARGET, f["method"]) if x)
            context = ", ".join(x for x in (f"job {labels.get(s.rel, s.rel)}" if s.rel != "." else "", f["image"]) if x)
            muted = f' <span class="muted">({esc(context)})</span>' if context else ""
            link = href(f"{layout.model_page(f['model'])}#{layout.section_id(s.rel)}")
            k = key(f["model"], f["layer"], f["method"], f["image"], s.label, "failed")
            items.append(
                f'<li class="f" data-k="{k}"><a href="{link}">{where}</a>{muted}: <span class="err">{esc(f["error"])}</span></li>'
            )
    if listed < total:
        items.append(f"<li>… and {total - listed} more failed artefact(s): see the model pages</li>")
    title = f"Failures: {total} artefact(s), {len(bad_jobs)} job(s)"
    body = f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">none</p>'
    return f'<section id="failures"><h2>{esc(title)}</h2>{body}</section>'


def _job_row(s: JobSummary, label: str) -> str:
    prefix = "" if s.rel == "." else s.rel + "/"
    files = " · ".join(f'<a href="{href(prefix + name)}">{esc(name)}</a>' for name in s.files)
    pages = ", ".join(
        f'<a href="{href(layout.model_page(m))}#{layout.section_id(s.rel)}">{esc(m)}</a>' for m in s.models
    )
    state = f'<span class="err">{esc(s.state)}</span>' if failed_job(s) else esc(s.state)
    return (
        f'<tr class="f" data-k="{key(s.label, s.state, *s.models)}"><td>{esc(label)}</td><td>{state}</td>'
        f"<td>{s.ok} ok, {s.failed} failed, {esc(s.planned if s.planned is not None else '?')} planned</td>"
        f"<td>{pages}</td><td>{files}</td></tr>"
    )


def jobs_section(summaries: list[JobSummary], labels: dict[str, str]) -> str:
    rows = "".join(_job_row(s, labels.get(s.rel, s.label)) for s in summaries)
    return (
        '<section id="jobs" class="group"><h2>Jobs, their artefacts and resolved configs</h2><table><tr><th>job</th>'
        f"<th>status</th><th>artefacts</th><th>models</th><th>files</th></tr>{rows}</table></section>"
    )


SCRIPT = """
(function(){var shown=document.getElementById("shown");
var total=document.querySelectorAll(".f").length;
function apply(){var n=FMI.filter(document.body);
 shown.textContent=n+" of "+total+" entries shown (model cards, prediction rows, failures, jobs)";}
document.getElementById("filter").addEventListener("input",apply);apply();})();
"""


def render_index(
    title: str, summaries: list[JobSummary], labels: dict[str, str], merged: bool, compare: bool = False
) -> str:
    """index.html over every job summary; ``merged`` says whether index.jsonl is there to link to, ``compare``
    whether compare.html (models side by side) is."""
    ok = sum(s.ok for s in summaries)
    failed = sum(s.failed for s in summaries)
    models = models_in_order(summaries)
    nav = "".join(f'<a href="#{name}">{name}</a>' for name in ("models", "predictions", "failures", "jobs"))
    if compare:
        nav = '<a href="compare.html"><b>models side by side</b></a>' + nav
    if merged:
        nav += f'<a href="{layout.MERGED}">{layout.MERGED}</a>'
    header = (
        f"<h1>Filter-Map-Insights report: {esc(title)}</h1>"
        f"<p>{len(summaries)} job(s) · {len(models)} model(s) · {ok} artefact(s) (pictures) written · {failed} failed</p>"
        f"{filter_box('filter by model, image, job, error…')}<nav>{nav}</nav>"
    )
    body = "\n".join(
        (
            models_table(summaries),
            failures_section(summaries, labels),
            predictions_section(summaries, labels),
            jobs_section(summaries, labels),
        )
    )
    return document(f"Filter-Map-Insights report: {title}", header, body, SCRIPT)
