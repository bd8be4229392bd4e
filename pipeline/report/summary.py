"""Per-job summaries: the few facts about a job that the index and the model pages show.

One small ``summary.json`` per job (``report/jobs/<job>/``) is written when the job's part is built, so a page
over a whole sweep reads summaries, never the manifests of other jobs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.output.files import write_bytes
from pipeline.output.record import Record
from pipeline.report import layout
from pipeline.report.jobs import Job, natural_key

# Bump when what a summary or chunk holds changes: parts made by another version are rebuilt.
VERSION = 4
MAX_FAILURES = 20  # failed artefacts listed per job in its summary (the model page's chunks list them all)
CLASS_TARGET = "class logit"  # what the report calls an artefact with no layer
LEADS = ("overview",)  # methods whose pictures open a model's page and stand for it in the index
LEAD_GROUP = "overview, input to output"
# the scores a model page tabulates: (row key, heading, what a good value is: "low" or "high")
SCORE_COLUMNS = (
    ("spearman_abs", "Spearman |map| at full randomisation", "low"),
    ("ssim", "SSIM at full randomisation", "low"),
    ("deletion_auc", "deletion AUC", "low"),
    ("insertion_auc", "insertion AUC", "high"),
)


@dataclass
class ModelPart:
    """One model's artefacts within one job: counts, what the filter can match, and a picture for the index."""

    ok: int = 0
    failed: int = 0
    layers: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    preview: dict[str, str] | None = None  # {"src": thumbnail or PNG, "href": PNG, "alt": text}
    leads: list[dict[str, Any]] = field(default_factory=list)  # pictures that open the model's page (overviews)
    depth: dict[str, Any] = field(default_factory=dict)  # first-layer filters and maps at relative depths
    scores: list[dict[str, Any]] = field(default_factory=list)  # scored artefacts (sanity, faithfulness): ``scored``

    @property
    def count(self) -> int:
        return self.ok + self.failed


@dataclass
class JobSummary:
    """What the index and model pages know about one job (paths relative to the report folder)."""

    rel: str
    label: str
    state: str
    fingerprint: str = ""
    version: int = VERSION
    overrides: list[str] = field(default_factory=list)
    error: str | None = None
    planned: Any = None
    files: list[str] = field(default_factory=list)  # run.json, config.resolved.yaml, manifest.jsonl if present
    models: dict[str, ModelPart] = field(default_factory=dict)
    predictions: dict[str, dict] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    merged_bytes: int = 0  # bytes of manifest.jsonl already in index.jsonl
    merged_digest: str = ""  # and their digest (Job.manifest_digest)
    shards: list[str] = field(default_factory=list)  # shard 0 of a sharded run: every shard's job, this one first

    @property
    def job_failed(self) -> bool:
        return self.state.upper() == "FAILED"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSummary:
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        known["models"] = {str(m): ModelPart(**part) for m, part in (known.get("models") or {}).items()}
        return cls(**known)


def layer_name(record: Record) -> str:
    """What the report calls where an artefact comes from: its layer, or what a per-image artefact is of."""
    if record.layer:
        return record.layer
    return LEAD_GROUP if record.method in LEADS else CLASS_TARGET


def image_name(record: Record) -> str:
    return record.image_label or ""


def real_layers(names: list[str]) -> list[str]:
    """The conv layers among a summary's layer names (not the overview's or the class targets' pseudo-layers)."""
    return [n for n in names if n not in (CLASS_TARGET, LEAD_GROUP)]


MAX_LEADS = 8  # per model and job
DEPTHS = (("first conv", 0.0), ("25 %", 0.25), ("50 %", 0.5), ("75 %", 0.75), ("last conv", 1.0))
MAPS, FILTERS, GRAD_CAM = "feature_maps", "filters", "grad_cam"
ROWS = (MAPS, GRAD_CAM, "feature_viz")  # what compare.html lines up across models at each depth, when it ran
TOP = 8  # feature maps shown per compare.html cell: the image's strongest at that depth
PAD = 6  # pipeline.render.grid's padding, to find the first tiles inside a feature-map grid


def _picture(r: Record) -> dict[str, Any]:
    return {
        "layer": layer_name(r),
        "index": r.layer_index,
        "image": image_name(r),
        "png": r.png,
        "thumb": r.thumb or r.png,
        "files": dict(r.attached),
    }


def leads(records: list[Record]) -> list[dict[str, Any]]:
    """The overview pictures (PNG, thumbnail, GIF, statistics plot) of a model, one per image."""
    return [_picture(r) for r in records if r.ok and r.png and r.method in LEADS][:MAX_LEADS]


def top_tiles(r: Record, root: Path, font_px: int) -> dict[str, Any] | None:
    """Where the strongest ``TOP`` maps sit inside a feature-map grid (``compose``'s layout: the input, then the
    channels strongest first, row by row): the PNG's size and a box ``[x, y, w, h]`` per map with its label, or
    None if unknown."""
    channels, tile, cols = r.extra.get("channels"), r.params.get("tile_px"), r.params.get("columns")
    if not isinstance(channels, list) or not channels or not isinstance(tile, int) or tile < 1:
        return None
    n = len(channels) + 1  # the input comes first
    cols = cols if isinstance(cols, int) and cols > 0 else max(1, math.ceil(math.sqrt(n)))
    cell_w, cell_h = tile + PAD, tile + font_px + 6 + PAD
    try:
        with Image.open(root / r.png) as image:
            width, height = image.size  # reads the header only
    except (OSError, ValueError):
        return None
    head = height - math.ceil(n / cols) * cell_h - PAD
    x0 = (width - cols * cell_w + PAD) // 2
    places = (divmod(i, cols) for i in range(1, min(TOP + 1, n)))
    boxes = [[x0 + c * cell_w - PAD // 2, head + row * cell_h, cell_w, cell_h - PAD // 2] for row, c in places]
    return {"size": [width, height], "boxes": boxes} if head >= 0 and x0 >= PAD // 2 else None


def depth(records: list[Record], root: Path | None = None, font_px: int = 12) -> dict[str, Any]:
    """What compare.html needs of a model: its first-layer filters and, per method of ``ROWS`` and image, its
    pictures at the relative depths of ``DEPTHS`` among the layers that have them (feature maps with where their
    strongest ``TOP`` maps are)."""
    done = [r for r in records if r.ok and r.png and isinstance(r.layer_index, int)]
    filters = sorted((r for r in done if r.method == FILTERS), key=lambda r: r.layer_index)
    found: dict[str, Any] = {"filters": _picture(filters[0]) if filters else None, "rows": {}}
    for method in ROWS:
        per_image: dict[str, list[Record]] = {}
        for r in done:
            if r.method == method:
                per_image.setdefault(image_name(r), []).append(r)
        for image, chosen in per_image.items():
            chosen.sort(key=lambda r: r.layer_index)
            row = []
            for _, f in DEPTHS:
                r = chosen[round(f * (len(chosen) - 1))]
                row.append(_picture(r))
                if method == MAPS and root is not None:
                    row[-1]["tiles"] = top_tiles(r, root, font_px)
            found["rows"].setdefault(method, {})[image] = row
    return found


def preview(records: list[Record]) -> dict[str, str] | None:
    """The picture that stands for a model in the index, readable at card size: the last layer's Grad-CAM of the
    first image, else the first layer's filters, else its overview, else its first artefact in conv order."""
    done = [r for r in records if r.ok and r.png]
    if not done:
        return None
    images = list(dict.fromkeys(r.image_label for r in done if r.image_label))

    def deepest(rs: list[Record]) -> Record:
        return max(rs, key=lambda r: r.layer_index if isinstance(r.layer_index, int) else -1)

    def shallowest(rs: list[Record]) -> Record:
        return min(rs, key=lambda r: r.layer_index if isinstance(r.layer_index, int) else 1e9)

    cams = [r for r in done if r.method == GRAD_CAM and r.layer and images and r.image_label == images[0]]
    filters = [r for r in done if r.method == FILTERS and r.layer]
    lead = [r for r in done if r.method in LEADS]
    first = deepest(cams) if cams else shallowest(filters) if filters else lead[0] if lead else shallowest(done)
    alt = " ".join(x for x in (first.model, first.method, layer_name(first), image_name(first)) if x)
    return {"src": first.png, "href": first.png, "alt": alt, "what": f"{first.method}, {layer_name(first)}"}


def scored(records: list[Record]) -> list[dict[str, Any]]:
    """What the table needs of a model's records: per scored artefact its pictures and one number per map and
    column (a sanity row's last stage; a faithfulness row's AUCs)."""
    found = []
    for r in records:
        rows = r.extra.get("scores") if r.ok else None
        # a score table's rows are dicts; other methods' "scores" (feature_maps' channel ranking) are numbers
        if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows) or not r.png:
            continue
        values = []
        for row in rows:
            final = row.get("final") or {}
            numbers = {k: final[k] if k in final else row.get(k) for k, _, _ in SCORE_COLUMNS}
            numbers = {k: v for k, v in numbers.items() if isinstance(v, (int, float))}
            values.append({"method": row.get("method"), "layer": row.get("layer"), **numbers})
        found.append(
            {
                "method": r.method,
                "image": r.image_label or "",
                "png": r.png,
                "thumb": r.thumb or r.png,
                "files": dict(r.attached),
                "rows": values,
            }
        )
    return found


def _model_part(records: list[Record], root: Path | None = None, font_px: int = 12) -> ModelPart:
    ok = sum(r.ok for r in records)
    return ModelPart(
        ok=ok,
        failed=len(records) - ok,
        layers=list(dict.fromkeys(layer_name(r) for r in records)),
        methods=list(dict.fromkeys(r.method for r in records)),
        images=list(dict.fromkeys(image_name(r) for r in records if r.image_label)),
        weights=list(dict.fromkeys(r.weights for r in records if r.weights)),
        preview=preview(records),
        leads=leads(records),
        depth=depth(records, root, font_px),
        scores=scored(records),
    )


def _failure(r: Record) -> dict:
    return {"model": r.model, "layer": layer_name(r), "method": r.method, "image": r.image, "error": r.error}


def summarize(
    job: Job, models: dict[str, list[Record]], fingerprint: str, job_dir: Path, shards: list[str] | None = None
) -> JobSummary:
    """A job's summary from its loaded directory and its records per model (``Job.by_model``); ``shards``: the
    jobs of a sharded run that ``job`` combines (report.shards)."""
    records = [r for items in models.values() for r in items]
    failed = [r for r in records if not r.ok]
    error = job.status.get("error")
    counts = job.run.get("counts") if isinstance(job.run.get("counts"), dict) else {}
    root = job_dir if job.rel == "." else job_dir.parents[len(Path(job.rel).parts) - 1]
    render = (job.run.get("config") or {}).get("render") if isinstance(job.run.get("config"), dict) else None
    font_px = render.get("font_px", 12) if isinstance(render, dict) else 12
    return JobSummary(
        rel=job.rel,
        label=job.label,
        state=job.state,
        fingerprint=fingerprint,
        overrides=job.overrides,
        error=None if error is None else str(error),
        planned=counts.get("planned"),
        files=[name for name in ("run.json", "config.resolved.yaml", "manifest.jsonl") if (job_dir / name).is_file()],
        models={model: _model_part(items, root, font_px) for model, items in models.items()},
        predictions={str(m): t for m, t in job.predictions.items() if isinstance(t, dict)},
        failures=[_failure(r) for r in failed[:MAX_FAILURES]],
        ok=len(records) - len(failed),
        failed=len(failed),
        merged_bytes=job.manifest_bytes,
        merged_digest=job.manifest_digest(),
        shards=list(shards or []),
    )


def summary_path(folder: Path, rel: str) -> Path:
    return folder / layout.job_part(rel) / layout.SUMMARY


def write_summary(folder: Path, summary: JobSummary) -> None:
    payload = json.dumps(summary.to_json(), ensure_ascii=False, default=str)
    write_bytes(summary_path(folder, summary.rel), payload.encode("utf-8"))


def _parse(path: Path) -> JobSummary | None:
    try:
        summary = JobSummary.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # unreadable or from an older layout: treated as missing, so the job's part is rebuilt
    return summary if summary.version == VERSION else None


def read_summary(folder: Path, rel: str) -> JobSummary | None:
    """A job's summary, or None when it has none (or one this version cannot use)."""
    return _parse(summary_path(folder, rel))


def read_summaries(folder: Path) -> list[JobSummary]:
    """Every job summary under ``folder``'s report, in natural job order (one small file per job)."""
    found = []
    try:
        parts = list((folder / layout.JOBS).iterdir())
    except OSError:
        return []
    for part in parts:
        summary = _parse(part / layout.SUMMARY)
        if summary is not None and part.name == Path(layout.job_part(summary.rel)).name:
            found.append(summary)
    return sorted(found, key=lambda s: natural_key(s.rel))


def distinct_overrides(summaries: list[JobSummary]) -> dict[str, list[str]]:
    """Each job's overrides that not every job shares (none for a single job): what tells the jobs apart."""
    common = set.intersection(*(set(s.overrides) for s in summaries)) if summaries else set()
    return {s.rel: [o for o in s.overrides if o not in common] for s in summaries}


def runs(summaries: list[JobSummary]) -> str:
    """How many jobs, where the shards of one config (``shard=i/n``, see pipeline.plan.shard_of) count as one run:
    ``3 job(s)``, or ``1 run(s) in 8 job(s) (sharded)`` for a model whose images were spread over array tasks."""
    sharded = [s for s in summaries if any(o.startswith("shard=") for o in s.overrides)]
    configs = {tuple(o for o in s.overrides if not o.startswith("shard=")) for s in summaries}
    jobs = sum(max(1, len(s.shards)) for s in summaries)  # a sharded run shown as one job stands for its shards
    if not sharded or len(configs) == jobs:
        return f"{jobs} job(s)"
    return f"{len(configs)} run(s) in {jobs} job(s) (sharded)"


def short_labels(summaries: list[JobSummary]) -> dict[str, str]:
    """Each job's directory plus only the overrides that differ between jobs (``0: models=alexnet``); a single
    job keeps its full label."""
    if len(summaries) < 2:
        return {s.rel: s.label for s in summaries}
    own = distinct_overrides(summaries)
    return {s.rel: f"{s.rel}: {' '.join(own[s.rel])}" if own[s.rel] else s.rel for s in summaries}
