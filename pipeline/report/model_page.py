"""A model's page: a depth explorer over one job at a time, the per-image and per-model pictures, predictions.

The page itself holds only summaries (a few hundred bytes per job), so it opens at once for a sweep of many jobs
over one model; the chosen job's artefacts come from its script chunk (pipeline.report.chunk). The explorer
shows one layer of one image at a time, every method of that layer side by side; the slider, the ← / → keys
and the depth strip walk the depth, thumbnails pick the image, a click opens a picture full size. The URL
fragment (``#job=j-0&layer=features.3.0&image=chelsea``; ``#j-0`` alone picks a job) keeps the place.
"""

from __future__ import annotations

from pipeline.report import layout, scores
from pipeline.report.markup import document, esc, href, predictions
from pipeline.report.summary import JobSummary, real_layers, runs

UP = layout.UP_FROM_PAGE

SCRIPT = r"""
(function(){
var jobs=[].slice.call(document.querySelectorAll(".jobdata")),select=document.getElementById("job");
var controls=document.getElementById("controls"),depth=document.getElementById("depth");
var label=document.getElementById("layer-label"),facts=document.getElementById("facts"),strip=document.getElementById("strip");
var full=document.getElementById("full"),fullImg=null,fullLink=document.getElementById("full-link");
var state={layer:0,name:null,image:null},cur=null;
function each(list,fn){[].forEach.call(list,fn);}
function parse(){var found={},h=location.hash.slice(1);
 if(/^j-[^=&]*$/.test(h)){found.job=decodeURIComponent(h);return found;}
 h.split("&").forEach(function(p){var i=p.indexOf("=");if(i>0){found[p.slice(0,i)]=decodeURIComponent(p.slice(i+1));}});
 return found;}
function write(){if(!cur){return;}var e=encodeURIComponent;
 var h="#job="+e(cur.id)+"&layer="+e(state.name||"")+"&image="+e(state.image||"");
 if(location.hash!==h){history.replaceState(null,"",h);}}
function fail(el,src){el.classList.add("missing");el.setAttribute("data-state","failed");
 var b=el.querySelector(".body");b.className="body err";b.textContent="could not load "+src;}
function load(el){if(el.getAttribute("data-state")){return;}el.setAttribute("data-state","loading");
 var s=document.createElement("script"),src=el.getAttribute("data-chunk");s.src=src;
 s.onerror=function(){fail(el,src);};document.head.appendChild(s);}
FMI.chunk=function(data){var el=document.getElementById(data.id);if(!el){return;}
 el.querySelector(".body").innerHTML=data.html;el.classList.add("loaded");el.setAttribute("data-state","loaded");
 if(el===cur){show();}};
function sections(){return cur?[].slice.call(cur.querySelectorAll("section.layer")):[];}
function buildStrip(secs){strip.innerHTML="";var most=1;
 var sizes=secs.map(function(s){var f=JSON.parse(s.getAttribute("data-facts")||"{}"),c=parseInt(f.shape,10)||0;
  most=Math.max(most,c);return c;});
 secs.forEach(function(s,i){var b=document.createElement("button");b.type="button";
  b.style.height=(8+30*(sizes[i]?Math.log(1+sizes[i])/Math.log(1+most):0.5))+"px";
  b.title=(i+1)+": "+s.getAttribute("data-name")+(sizes[i]?" ("+sizes[i]+" channels)":"");
  b.addEventListener("click",function(){go(i);});strip.appendChild(b);});
 strip.setAttribute("data-job",cur.id);}
function show(){
 if(!cur||cur.getAttribute("data-state")!=="loaded"){return;}
 var secs=sections(),slot=cur.querySelector(".controls-slot");
 if(slot&&controls.parentNode!==slot){slot.appendChild(controls);}
 controls.hidden=secs.length===0;
 if(state.name!==null){secs.forEach(function(s,i){if(s.getAttribute("data-name")===state.name){state.layer=i;}});}
 state.layer=Math.max(0,Math.min(secs.length-1,state.layer));
 if(strip.getAttribute("data-job")!==cur.id){buildStrip(secs);}
 depth.max=Math.max(0,secs.length-1);depth.value=state.layer;
 secs.forEach(function(s,i){s.hidden=i!==state.layer;});
 each(strip.children,function(b,i){b.classList.toggle("on",i===state.layer);});
 var sec=secs[state.layer];
 var picks=[].slice.call(cur.querySelectorAll(".pick")),names=picks.map(function(p){return p.getAttribute("data-image");});
 if(names.indexOf(state.image)<0){state.image=names.length?names[0]:"";}
 picks.forEach(function(p){var on=p.getAttribute("data-image")===state.image;p.classList.toggle("on",on);p.setAttribute("aria-pressed",String(on));});
 each(cur.querySelectorAll("section.layer figure, .per-image figure"),function(f){
  var im=f.getAttribute("data-image");f.hidden=!!im&&im!==state.image;});
 if(sec){state.name=sec.getAttribute("data-name");
  var f=JSON.parse(sec.getAttribute("data-facts")||"{}"),bits=[];
  if(sec.getAttribute("data-index")!==""){bits.push("conv layer #"+sec.getAttribute("data-index"));}
  if(f.shape){bits.push("output "+f.shape);}if(f.stride){bits.push("stride "+f.stride);}
  if(f.receptive_field){bits.push("receptive field "+f.receptive_field);}
  label.textContent="layer "+(state.layer+1)+" of "+secs.length+": "+state.name;
  facts.textContent=bits.join(" · ")+(state.image?" · image "+state.image:"");}
 write();}
function go(i){state.layer=i;state.name=null;show();}
function pick(job){var el=null;jobs.forEach(function(j){if(j.id===job){el=j;}});el=el||jobs[0];if(!el){return;}
 jobs.forEach(function(j){j.hidden=j!==el;});cur=el;if(select){select.value=el.id;}load(el);show();}
depth.addEventListener("input",function(){go(parseInt(depth.value,10));});
document.getElementById("prev").addEventListener("click",function(){go(state.layer-1);});
document.getElementById("next").addEventListener("click",function(){go(state.layer+1);});
if(select){select.addEventListener("change",function(){pick(select.value);});}
function openFull(a){var img=a.querySelector("img");fullImg=fullImg||full.appendChild(document.createElement("img"));
 fullImg.id="full-img";fullImg.src=a.getAttribute("href");fullImg.alt=img?img.alt:"";
 fullLink.href=a.getAttribute("href");full.hidden=false;document.getElementById("close-full").focus();}
function closeFull(){full.hidden=true;if(fullImg){full.removeChild(fullImg);fullImg=null;}}
document.addEventListener("click",function(e){
 var p=e.target.closest(".pick");if(p){state.image=p.getAttribute("data-image");show();return;}
 var a=e.target.closest("a.full");
 if(a&&!e.ctrlKey&&!e.metaKey&&!e.shiftKey&&e.button===0){e.preventDefault();openFull(a);return;}
 if(!full.hidden&&(e.target===full||e.target.id==="close-full")){closeFull();}});
document.addEventListener("keydown",function(e){
 if(e.key==="Escape"&&!full.hidden){closeFull();return;}
 var t=e.target,tag=t&&t.tagName;
 if(tag==="INPUT"||tag==="SELECT"||tag==="TEXTAREA"||!full.hidden||e.altKey||e.ctrlKey||e.metaKey){return;}
 var n=sections().length;
 if(e.key==="ArrowRight"){go(Math.min(n-1,state.layer+1));e.preventDefault();}
 else if(e.key==="ArrowLeft"){go(Math.max(0,state.layer-1));e.preventDefault();}
 else if(e.key==="Home"){go(0);e.preventDefault();}else if(e.key==="End"){go(n-1);e.preventDefault();}});
var start=parse();state.name=start.layer||null;state.image=start.image||null;pick(start.job||"");
})();
"""

CONTROLS = (
    '<div id="controls" hidden><div class="walk"><button id="prev" type="button" title="shallower (←)">← shallower'
    '</button><input id="depth" type="range" min="0" max="0" value="0" aria-label="depth">'
    '<button id="next" type="button" title="deeper (→)">deeper →</button> <b id="layer-label"></b></div>'
    '<div id="strip" title="the layers from input to output (bar height: channels); click one to jump"></div>'
    '<p id="facts" class="muted"></p></div>'
)
FULL = (
    '<div id="full" hidden role="dialog" aria-label="full size"><div class="bar"><button id="close-full" type="button">'
    'close (Esc)</button> <a id="full-link">open the PNG itself</a></div></div>'
)


def _links(s: JobSummary) -> str:
    prefix = "" if s.rel == "." else s.rel + "/"
    links = [f'<a href="{href(UP + prefix + name)}">{esc(name)}</a>' for name in s.files]
    return " · ".join(links) if links else '<span class="muted">no run files</span>'


def job_data(model: str, s: JobSummary, label: str) -> str:
    """The place a job's chunk is loaded into: a slot for the explorer's controls, then the chunk's HTML."""
    part = s.models[model]
    failed = f', <span class="err">{part.failed} failed</span>' if part.failed else ""
    return (
        f'<div class="jobdata" id="{layout.section_id(s.rel)}" hidden data-chunk="{href(UP + layout.chunk(s.rel, model))}">'
        f'<p class="muted">job {esc(label)} · {esc(s.state)} · {part.count} artefact(s){failed} · {_links(s)}</p>'
        f'<div class="body"><p class="muted">loading…</p></div></div>'
    )


def job_select(model: str, mine: list[JobSummary], labels: dict[str, str]) -> str:
    if len(mine) < 2:
        return ""
    options = "".join(
        f'<option value="{layout.section_id(s.rel)}">{esc(labels.get(s.rel, s.label))} ({s.models[model].count}'
        " artefacts)</option>"
        for s in mine
    )
    return f'<p><label>job <select id="job">{options}</select></label></p>'


def leads_section(model: str, mine: list[JobSummary], labels: dict[str, str]) -> str:
    """The model's overviews (a tall picture from input to output per image) with their statistics plots and
    animations; from the summaries, so they show before any chunk is loaded."""
    figures = []
    for s in mine:
        for lead in s.models[model].leads:
            caption = " · ".join(x for x in (lead["image"], labels.get(s.rel, s.label) if len(mine) > 1 else "") if x)
            files = lead.get("files") or {}
            links = [f'<a href="{href(UP + lead["png"])}">overview</a>']
            links += [f'<a href="{href(UP + path)}">{esc(name)}</a>' for name, path in files.items()]
            stats = files.get("stats")
            plot = (
                f'<a class="full" href="{href(UP + stats)}"><img loading="lazy" class="plot" src="{href(UP + stats)}"'
                f' alt="{esc(model)} statistics against depth, {esc(lead["image"])}"></a>'
                if stats
                else ""
            )
            figures.append(
                f'<figure class="lead">'
                f'<a class="full" href="{href(UP + lead["png"])}"><img loading="lazy" src="{href(UP + lead["thumb"])}"'
                f' alt="{esc(model)} overview, {esc(lead["image"])}"></a>{plot}'
                f"<figcaption>{esc(caption)} · {' · '.join(links)}</figcaption></figure>"
            )
    body = f'<div class="leads">{"".join(figures)}</div>' if figures else '<p class="muted">no overview ran</p>'
    return f'<section id="model"><h2>The whole model: overview and statistics, input to output</h2>{body}</section>'


def render_model_page(title: str, model: str, summaries: list[JobSummary], labels: dict[str, str]) -> str:
    """The page of ``model`` over the jobs that ran it (``summaries`` may hold other jobs too)."""
    mine = [s for s in summaries if model in s.models]
    ok = sum(s.models[model].ok for s in mine)
    failed = sum(s.models[model].failed for s in mine)
    n_layers = len({layer for s in mine for layer in real_layers(s.models[model].layers)})
    n_images = len({image for s in mine for image in s.models[model].images})
    n_methods = len({method for s in mine for method in s.models[model].methods})
    nav = " · ".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (("explorer", "depth explorer"), ("predictions", "predictions"), ("model", "whole model"))
    )
    header = (
        f'<p><a href="{UP}{layout.INDEX}">← report {esc(title)}</a> · {nav}</p><h1>{esc(model)} <span class="muted">'
        f"{runs(mine)} · {ok} artefact(s) ok, {failed} failed · {n_layers} conv layer(s) · "
        f"{n_images} image(s) · {n_methods} method(s)</span></h1>"
    )
    table = predictions(model, mine, labels)
    body = (
        '<section id="explorer"><h2>Depth explorer <span class="muted">pick an image, then walk the layers with'
        " the slider, the ← / → keys or the strip; click a picture for full size</span></h2>"
        f"{job_select(model, mine, labels)}{CONTROLS}"
        + "".join(job_data(model, s, labels.get(s.rel, s.label)) for s in mine)
        + "</section>"
        + (f'<section id="predictions"><h2>Top-5 predictions per image</h2>{table}</section>' if table else "")
        + leads_section(model, mine, labels)
        + scores.section(model, [s.models[model].scores for s in mine])
        + FULL
    )
    return document(f"{model}: Filter-Map-Insights report {title}", header, body, SCRIPT)
