"""What every report page shares: escaping, the style sheet, the page shell and the predictions table.

Every name that comes from configs, layers or image files is HTML-escaped, and every path in href/src is
URL-quoted, so a file called ``<script>.png`` shows up as text. Pages use inline CSS and JS and relative links
only, so they work from file:// with no server and no network.
"""

from __future__ import annotations

import html
import json
from urllib.parse import quote

from pipeline.report.summary import JobSummary

OPEN_ROWS = 12  # a longer predictions table starts closed, so it does not push everything else off the screen

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5em 3em;color:#222;background:#fafafa}
header{background:#fafafa;padding:.6em 0;border-bottom:1px solid #ddd}
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
td.thumb img{width:128px;height:auto;display:block}
nav a{margin-right:.8em}
details.job{margin:.4em 0;border:1px solid #ddd;border-radius:4px;background:#fff;padding:.2em .6em}
details.job>summary{cursor:pointer;font-weight:bold}details.job.missing{border-color:#c33}
.leads{display:flex;flex-wrap:wrap;gap:14px}.lead{margin:0;background:#fff;border:1px solid #ddd;padding:4px}
.lead img{width:256px;height:auto;vertical-align:top;margin-right:6px}.lead img.plot{width:420px}
table.compare{width:100%;table-layout:fixed}table.compare td{text-align:center;min-width:200px}
table.compare th{background:#f0f0f0}table.compare th:first-child{width:9em}
table.compare img{width:100%;max-width:380px;height:auto;display:block;margin:auto}
.tops{display:grid;grid-template-columns:repeat(4,1fr);gap:3px;max-width:520px;margin:auto}.tops svg{width:100%;height:auto;display:block}
.wrap{overflow-x:auto}
.cards{display:flex;flex-wrap:wrap;gap:14px}.model{width:420px;margin:0;background:#fff;border:1px solid #ddd;
border-radius:4px;padding:6px}.model img{width:100%;height:auto;display:block;background:#eee;min-height:60px}
.model h3{margin:.2em 0}.model ul{margin:.2em 0;padding-left:1.2em}
.picks{display:flex;flex-wrap:wrap;gap:6px;margin:.3em 0}
.pick{display:flex;flex-direction:column;align-items:center;border:2px solid #ccc;background:#fff;border-radius:4px;
padding:2px;cursor:pointer;font:inherit;font-size:12px}.pick.on{border-color:#4a6fa5;background:#e8eef8;font-weight:bold}
.pick img,.pick i{width:72px;height:72px;object-fit:cover;object-position:0 75%;display:block;background:#eee}
#controls{position:sticky;top:0;background:#fafafa;z-index:2;padding:.3em 0;border-bottom:1px solid #ddd}
.walk{display:flex;align-items:center;gap:8px}#depth{flex:1;max-width:50em}
#strip{display:flex;align-items:flex-end;gap:1px;height:40px;margin:.3em 0}
#strip button{flex:1;min-width:3px;max-width:24px;padding:0;border:0;background:#9fb3d1;cursor:pointer}
#strip button.on{background:#c33}#facts{margin:.1em 0}
.panels{display:flex;flex-wrap:wrap;gap:10px;margin:.4em 0}.panels .card{flex:1 1 160px;max-width:330px;width:auto}
#full{position:fixed;inset:0;background:rgba(20,20,20,.92);z-index:10;overflow:auto;text-align:center;padding:1em}
#full .bar{margin-bottom:.5em}#full a{color:#cde}#full img{max-width:none;background:#fff}
h1 .muted,#explorer h2 .muted{font-size:.7em;font-weight:normal}
header p{margin:.2em 0}
table.chan{border-collapse:collapse;margin:.4em 0}table.chan td,table.chan th{border-top:1px solid #ddd;padding:3px 6px;
vertical-align:top;text-align:left}.sprite{display:inline-block;background-repeat:no-repeat}
details.chan{max-width:100%;overflow-x:auto}table.chan td.none{color:#999;font-size:85%}
"""

# Registered in <head> so it sees every image's error event: marks cards whose picture is gone.
BROKEN_SCRIPT = """
document.addEventListener("error",function(e){var t=e.target;if(t&&t.tagName==="IMG"){t.classList.add("broken");
var c=t.closest(".card");if(c){c.classList.add("missing");}}},true);
"""

# The text filter: every term must occur in an item's data-k; groups with nothing left are hidden.
FILTER_SCRIPT = """
var FMI=window.FMI||{};window.FMI=FMI;
FMI.terms=function(){var box=document.getElementById("filter");
 return box?box.value.toLowerCase().split(/\\s+/).filter(Boolean):[];};
FMI.matches=function(key,terms){return terms.every(function(t){return key.indexOf(t)>=0;});};
FMI.filter=function(root){var terms=FMI.terms(),n=0;
 [].forEach.call(root.querySelectorAll(".f"),function(el){
  var ok=FMI.matches(el.getAttribute("data-k")||"",terms);el.hidden=!ok;if(ok){n++;}});
 [].forEach.call(root.querySelectorAll(".group"),function(g){g.hidden=terms.length>0&&!g.querySelector(".f:not([hidden])");});
 return n;};
"""


def esc(value: object) -> str:
    """HTML-escape any value for text and attribute positions (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def href(path: str) -> str:
    """A relative POSIX path as a URL-quoted, attribute-safe href/src."""
    return esc(quote(path))


def key(*parts: object) -> str:
    """A filter key (attribute-safe, lower case) made of the parts that are not None."""
    return esc(" ".join(str(p) for p in parts if p is not None).lower())


def percent(prob: object) -> str:
    try:
        return f"{100 * float(prob):.1f}%"
    except (TypeError, ValueError):
        return esc(prob)


def document(title: str, header: str, body: str, script: str = "", auto_open: bool = False) -> str:
    """A whole page: ``header`` sticks to the top; ``script`` runs after the body is parsed."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{esc(title)}</title><style>{STYLE}</style><script>{BROKEN_SCRIPT}{FILTER_SCRIPT}</script></head>
<body data-auto="{int(auto_open)}"><header>{header}</header>
{body}
<script>{script}</script></body></html>
"""


def filter_box(placeholder: str) -> str:
    return (
        f'<input id="filter" type="search" placeholder="{esc(placeholder)}" aria-label="filter">'
        ' <span id="shown" class="muted"></span>'
    )


def _top(top: object) -> str:
    return "".join(
        f"<td>{esc(p.get('class_name'))} <span class='muted'>#{esc(p.get('class_index'))} "
        f"{percent(p.get('prob'))}</span></td>"
        for p in (top if isinstance(top, list) else [])
        if isinstance(p, dict)
    )


def _jobs_cell(rels: list[str], labels: dict[str, str], total: int) -> str:
    if len(rels) == total and total > 1:
        return f"all {total} jobs"
    shown = ", ".join(labels.get(rel, rel) for rel in rels[:3])
    return shown + (f" and {len(rels) - 3} more" if len(rels) > 3 else "")


def predictions(
    model: str, summaries: list[JobSummary], labels: dict[str, str], limit: int | None = None, more: str = ""
) -> str:
    """The top-5 table of ``model`` per image; jobs that predicted the same are one row. Past ``limit`` rows, a
    last row says how many more there are at the link ``more``."""
    rows: dict[tuple[str, str], tuple[object, list[str]]] = {}
    for s in summaries:
        for image_label, top in (s.predictions.get(model) or {}).items():
            found = rows.setdefault((str(image_label), json.dumps(top, sort_keys=True)), (top, []))
            found[1].append(s.rel)
    if not rows:
        return ""
    with_jobs = len(summaries) > 1
    total = sum(1 for s in summaries if model in s.predictions)
    count = len(rows)
    cells = []
    for (image_label, _), (top, rels) in list(rows.items())[:limit]:
        jobs = f"<td>{esc(_jobs_cell(rels, labels, total))}</td>" if with_jobs else ""
        k = key(model, image_label, *rels)
        cells.append(f'<tr class="f" data-k="{k}">{jobs}<td>{esc(image_label)}</td>{_top(top)}</tr>')
    if count > len(cells):
        cells.append(f'<tr><td colspan="7"><a href="{more}">all {count} rows</a></td></tr>')
    head = ("<th>jobs</th>" if with_jobs else "") + "<th>image</th>" + "".join(f"<th>top {i}</th>" for i in range(1, 6))
    opened = " open" if count <= OPEN_ROWS else ""
    return (
        f'<details{opened} class="group"><summary>Top-5 predictions of {esc(model)} ({count} rows)</summary>'
        f"<table><tr>{head}</tr>{''.join(cells)}</table></details>"
    )
