"""A model's page: its predictions and one collapsed section per job, each loaded from its chunk when opened.

The page itself holds only summaries (a few hundred bytes per job), so it opens at once for a sweep of many jobs
over one model; a page with few artefacts opens every section by itself. ``#j-<job>`` in the URL opens that
job's section. The text filter matches a job's overrides and what it holds before it is loaded, and each card
once it is.
"""

from __future__ import annotations

from pipeline.report import layout, scores
from pipeline.report.markup import document, esc, filter_box, href, key, predictions
from pipeline.report.summary import JobSummary, distinct_overrides

AUTO_OPEN = 200  # artefacts: a page with at most this many opens all its jobs' sections at once
UP = layout.UP_FROM_PAGE

SCRIPT = """
(function(){
var target=location.hash?document.getElementById(decodeURIComponent(location.hash.slice(1))):null;
var auto=document.body.getAttribute("data-auto")==="1";
var sections=[].slice.call(document.querySelectorAll("details.job")),shown=document.getElementById("shown");
function apply(){
 var terms=FMI.terms(),jobs=0,cards=0;
 sections.forEach(function(sec){
  var own=sec.getAttribute("data-k")||"",ok;
  if(sec.classList.contains("loaded")){
   var n=0;
   [].forEach.call(sec.querySelectorAll(".f"),function(el){
    var m=FMI.matches(own+" "+(el.getAttribute("data-k")||""),terms);el.hidden=!m;if(m&&el.classList.contains("card")){n++;}});
   [].forEach.call(sec.querySelectorAll(".group"),function(g){g.hidden=terms.length>0&&!g.querySelector(".f:not([hidden])");});
   cards+=n;ok=terms.length===0||n>0;
  }else{ok=FMI.matches(own+" "+(sec.getAttribute("data-c")||""),terms);}
  sec.hidden=!ok;if(ok){jobs++;}
 });
 var table=document.getElementById("predictions");if(table){FMI.filter(table);}
 shown.textContent=jobs+" of "+sections.length+" job(s) shown, "+cards+" artefact(s) shown in the opened ones";
}
function fail(sec,src){sec.classList.add("missing");sec.setAttribute("data-state","failed");
 var b=sec.querySelector(".body");b.className="body err";
 b.textContent="could not load "+src;}
function load(sec){
 if(sec.getAttribute("data-state")){return;}sec.setAttribute("data-state","loading");
 var s=document.createElement("script"),src=sec.getAttribute("data-chunk");s.src=src;
 s.onerror=function(){fail(sec,src);};document.head.appendChild(s);
}
FMI.chunk=function(data){var sec=document.getElementById(data.id);if(!sec){return;}
 sec.querySelector(".body").innerHTML=data.html;sec.classList.add("loaded");sec.setAttribute("data-state","loaded");apply();
 if(sec===target){sec.scrollIntoView();}};
sections.forEach(function(sec){sec.addEventListener("toggle",function(){if(sec.open){load(sec);}});});
document.getElementById("open").addEventListener("click",function(){
 sections.forEach(function(sec){if(!sec.hidden){sec.open=true;load(sec);}});});
document.getElementById("close").addEventListener("click",function(){sections.forEach(function(sec){sec.open=false;});});

sections.forEach(function(sec){if(auto||sec===target){sec.open=true;load(sec);}});
document.getElementById("filter").addEventListener("input",apply);apply();
})();
"""


def _links(s: JobSummary) -> str:
    prefix = "" if s.rel == "." else s.rel + "/"
    links = [f'<a href="{href(UP + prefix + name)}">{esc(name)}</a>' for name in s.files]
    return " · ".join(links) if links else '<span class="muted">no run files</span>'


def job_section(model: str, s: JobSummary, label: str, distinct: list[str]) -> str:
    """A job's collapsed section: what the summary knows, and where its chunk is. The filter matches every card
    of the job on ``distinct`` (its overrides that other jobs do not share), its directory and its state."""
    part = s.models[model]
    failed = f', <span class="err">{part.failed} failed</span>' if part.failed else ""
    own = key(s.rel, *distinct, s.state)
    contents = key(*part.layers, *part.methods, *part.images, *part.weights, "failed" if part.failed else None)
    return (
        f'<details class="job" id="{layout.section_id(s.rel)}" data-chunk="{href(UP + layout.chunk(s.rel, model))}"'
        f' data-k="{own}" data-c="{contents}"><summary>job {esc(label)} <span class="muted">· {esc(s.state)} ·'
        f" {part.count} artefact(s){failed}</span></summary><p>{_links(s)}</p>"
        f'<div class="body"><p class="muted">loading…</p></div></details>'
    )


def leads_section(model: str, mine: list[JobSummary], labels: dict[str, str]) -> str:
    """The model's overviews (a tall picture from input to output per image) with their statistics plots and
    animations, opening the page; from the summaries, so they show before any job is opened."""
    figures = []
    for s in mine:
        for lead in s.models[model].leads:
            caption = " · ".join(x for x in (lead["image"], labels.get(s.rel, s.label) if len(mine) > 1 else "") if x)
            files = lead.get("files") or {}
            links = [f'<a href="{href(UP + lead["png"])}">overview</a>']
            links += [f'<a href="{href(UP + path)}">{esc(name)}</a>' for name, path in files.items()]
            stats = files.get("stats")
            plot = (
                f'<a href="{href(UP + stats)}"><img loading="lazy" class="plot" src="{href(UP + stats)}"'
                f' alt="{esc(model)} statistics against depth, {esc(lead["image"])}"></a>'
                if stats
                else ""
            )
            figures.append(
                f'<figure class="lead f" data-k="{key(model, lead["image"], s.rel, "overview")}">'
                f'<a href="{href(UP + lead["png"])}"><img loading="lazy" src="{href(UP + lead["thumb"])}"'
                f' alt="{esc(model)} overview, {esc(lead["image"])}"></a>{plot}'
                f"<figcaption>{esc(caption)} · {' · '.join(links)}</figcaption></figure>"
            )
    if not figures:
        return ""
    return f'<section id="overview" class="group"><h2>Overview, input to output</h2><div class="leads">{"".join(figures)}</div></section>'


def render_model_page(title: str, model: str, summaries: list[JobSummary], labels: dict[str, str]) -> str:
    """The page of ``model`` over the jobs that ran it (``summaries`` may hold other jobs too)."""
    mine = [s for s in summaries if model in s.models]
    ok = sum(s.models[model].ok for s in mine)
    failed = sum(s.models[model].failed for s in mine)
    header = (
        f'<p><a href="{UP}{layout.INDEX}">← report {esc(title)}</a></p><h1>{esc(model)}</h1>'
        f"<p>{len(mine)} job(s) · {ok} artefact(s) ok · {failed} failed</p>"
        f"{filter_box('filter by layer, method, image, job, override…')}"
        ' <button id="open" type="button">open all shown</button> <button id="close" type="button">close all</button>'
    )
    table = predictions(model, mine, labels)
    distinct = distinct_overrides(summaries)
    body = (
        leads_section(model, mine, labels)
        + scores.section(model, [s.models[model].scores for s in mine])
        + (f'<section id="predictions">{table}</section>' if table else "")
        + "".join(job_section(model, s, labels.get(s.rel, s.label), distinct[s.rel]) for s in mine)
    )
    return document(f"{model}: Filter-Map-Insights report {title}", header, body, SCRIPT, ok + failed <= AUTO_OPEN)
