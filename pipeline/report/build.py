"""Build a report folder: each job's part (summary + chunks), the model pages and index.html, and index.jsonl.

- ``update_job``, after one job: that job's part, the pages of its models and index.html, from that job's files
  and every job's small summary; its new manifest lines are appended to index.jsonl. The cost does not grow
  with the manifests of the other jobs.
- ``sync_report``, when a run or sweep ends: the part of every job whose files changed (none, when the callback
  saw every job end), and index.jsonl rewritten in job order if that left it without some job's lines.
- ``build_report``: everything from scratch (``python -m pipeline.report``).

Parallel workers must serialise these calls (pipeline.report.callback holds a lock); every file is written
atomically except index.jsonl, which grows by whole lines like a manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.output.files import write_bytes
from pipeline.output.record import Record
from pipeline.report import layout
from pipeline.report.chunk import render_chunk
from pipeline.report.compare_page import PAGE as COMPARE
from pipeline.report.compare_page import render_compare
from pipeline.report.index_page import models_in_order, render_index
from pipeline.report.jobs import (
    JOB_STATUS,
    MANIFEST,
    Job,
    NoManifestError,
    find_job_dirs,
    fingerprint,
    job_overrides,
    load_job,
    natural_key,
)
from pipeline.report.model_page import render_model_page
from pipeline.report.shards import combine, combined_fingerprint, group_of, shard_groups, shown
from pipeline.report.summary import (
    VERSION,
    JobSummary,
    read_summaries,
    read_summary,
    short_labels,
    summarize,
    write_summary,
)

STAMP = ".report.stamp"  # what sync_report last built from, to skip a sync that would change nothing
WRITERS = 8  # threads building job parts in a full rebuild


def part_fingerprint(folder: Path, job_dir: Path, shards: list[str] | None = None) -> str:
    """What a job's part is made from: its files, and for shard 0 of a sharded run those of every shard."""
    if not shards or len(shards) < 2:
        return fingerprint(job_dir)
    return combined_fingerprint([fingerprint(folder / rel) for rel in shards])


def build_part(folder: Path, job_dir: Path, shards: list[str] | None = None) -> tuple[JobSummary, Job]:
    """Write one job's part: a chunk per model, then its summary (the summary last, as the part's seal). For shard
    0 of a sharded run (``shards``: its shards' rels, itself first) the part holds every shard's artefacts; the
    job returned is always its own (for index.jsonl)."""
    job = load_job(job_dir, folder)
    shards = shards if shards and len(shards) > 1 else None
    whole = combine([job, *(load_job(folder / rel, folder) for rel in shards[1:])]) if shards else job
    models = whole.by_model()
    part = folder / layout.job_part(job.rel)
    keep = {layout.SUMMARY}
    for model, records in models.items():
        path = folder / layout.chunk(job.rel, model)
        write_bytes(path, render_chunk(whole, records).encode("utf-8"))
        keep.add(path.name)
    summary = summarize(whole, models, part_fingerprint(folder, job_dir, shards), job_dir, shards)
    write_summary(folder, summary)
    for path in part.iterdir():  # chunks of models this job no longer has (a rerun into the same directory)
        if path.name not in keep and not path.name.startswith("."):
            path.unlink(missing_ok=True)
    return summary, job


def merged_lines(records: list[Record]) -> bytes:
    """index.jsonl lines: manifest records with ``job`` and paths relative to the report folder."""
    return "".join(json.dumps(r.to_json(), ensure_ascii=False, default=str) + "\n" for r in records).encode("utf-8")


def _append(path: Path, data: bytes) -> None:
    """Append whole lines and sync; a torn last line (a killed writer) is closed first so it stays one bad line."""
    with open(path, "ab+") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                data = b"\n" + data
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _merge_job(folder: Path, job: Job, old: JobSummary | None, others: bool) -> None:
    """Append the job's manifest lines that index.jsonl lacks. Where that cannot keep it complete (other jobs'
    lines are missing; the job's manifest was replaced, not appended to) index.jsonl is removed instead, and
    ``sync_report`` or ``build_report`` writes it again."""
    merged = folder / layout.MERGED
    if not merged.is_file():
        if not others:
            write_bytes(merged, merged_lines(job.records))
        return
    offset = old.merged_bytes if old else 0
    if old is not None and job.manifest_digest(offset) != old.merged_digest:
        merged.unlink()
    elif records := job.records_from(offset):
        _append(merged, merged_lines(records))


def write_pages(folder: Path, summaries: list[JobSummary], models: set[str] | None = None) -> Path:
    """index.html, compare.html (two or more models) and the pages of ``models`` (every model when None) from the
    summaries; drops pages of models that no job has any more. A sharded run shows as one job (report.shards)."""
    summaries = shown(summaries)
    labels = short_labels(summaries)
    present = models_in_order(summaries)
    for model in present if models is None else models:
        page = folder / layout.model_page(model)
        if model in present:
            write_bytes(page, render_model_page(folder.name, model, summaries, labels).encode("utf-8"))
        else:
            page.unlink(missing_ok=True)
    compare = render_compare(folder.name, summaries)
    if compare is None:
        (folder / COMPARE).unlink(missing_ok=True)
    else:
        write_bytes(folder / COMPARE, compare.encode("utf-8"))
    target = folder / layout.INDEX
    html = render_index(folder.name, summaries, labels, (folder / layout.MERGED).is_file(), compare is not None)
    write_bytes(target, html.encode("utf-8"))
    return target


def _prune(folder: Path, summaries: list[JobSummary]) -> bool:
    """Remove the parts of jobs that are gone and the pages of models no job has; say whether a job's went."""
    parts = {Path(layout.job_part(s.rel)).name for s in summaries}
    pages = {Path(layout.model_page(m)).name for m in models_in_order(summaries)}
    removed = False
    for folder_of, keep, remove in ((layout.JOBS, parts, shutil.rmtree), (layout.MODELS, pages, os.unlink)):
        try:
            entries = list((folder / folder_of).iterdir())
        except OSError:
            continue
        for path in entries:
            if path.name not in keep and not path.name.startswith("."):
                remove(path)
                removed = removed or folder_of == layout.JOBS
    return removed


def _has_job_files(job_dir: Path) -> bool:
    return (job_dir / MANIFEST).is_file() or (job_dir / JOB_STATUS).is_file()


def update_job(folder: Path, job_dir: Path) -> Path:
    """After one job: rebuild its part, its models' pages and index.html, and merge its lines into index.jsonl.

    Reads the job's own files and the summaries of the others (never their manifests); falls back to
    ``sync_report`` when the job is outside the folder or another job's summary is missing or outdated.
    """
    folder, job_dir = Path(folder).resolve(), Path(job_dir).resolve()
    if not job_dir.is_relative_to(folder):
        return sync_report(folder)
    rel = job_dir.relative_to(folder).as_posix()
    old = read_summary(folder, rel)
    index = folder / layout.INDEX
    others = [s for s in read_summaries(folder) if s.rel != rel]
    owner, shards = group_of(rel, job_overrides(job_dir), [(s.rel, s.overrides) for s in others])
    mine = shards if owner == rel else None
    if old is not None and old.fingerprint == part_fingerprint(folder, job_dir, mine) and index.is_file():
        return index
    part_count = sum(1 for _ in (folder / layout.JOBS).iterdir()) if (folder / layout.JOBS).is_dir() else 0
    if part_count > len(others) + (old is not None):  # a part this version cannot read: rebuild what is stale
        return sync_report(folder)
    if not _has_job_files(job_dir):
        if not others:
            raise NoManifestError(f"no {MANIFEST} under {folder}: run the pipeline into it first")
        return index if index.is_file() else write_pages(folder, others)
    summary, job = build_part(folder, job_dir, mine)
    _merge_job(folder, job, old, bool(others))
    if owner is not None and owner != rel:  # a shard of a run: shard 0's part shows it too
        combined, _ = build_part(folder, folder / owner, shards)
        others = [combined if s.rel == owner else s for s in others]
    (folder / STAMP).unlink(missing_ok=True)
    models = set(summary.models) | set(old.models if old else ())
    return write_pages(folder, sorted([*others, summary], key=lambda s: natural_key(s.rel)), models)


def _stamp(folder: Path, job_dirs: list[Path]) -> str:
    lines = [f"{VERSION}"] + [f"{d.relative_to(folder).as_posix()}\t{fingerprint(d)}" for d in job_dirs]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _part(folder: Path, job_dir: Path, force: bool, shards: list[str] | None) -> tuple[JobSummary, Job | None]:
    """A job's part: rebuilt when forced or stale (with the job it loaded), else its summary as it stands."""
    old = None if force else read_summary(folder, job_dir.relative_to(folder).as_posix())
    if old is not None and old.fingerprint == part_fingerprint(folder, job_dir, shards):
        return old, None
    return build_part(folder, job_dir, shards)


def _lines(folder: Path, job_dir: Path, summary: JobSummary, job: Job | None) -> bytes:
    """A job's index.jsonl lines; its summary then records that index.jsonl holds all of them."""
    job = job or load_job(job_dir, folder)
    if (summary.merged_bytes, summary.merged_digest) != (job.manifest_bytes, job.manifest_digest()):
        summary.merged_bytes, summary.merged_digest = job.manifest_bytes, job.manifest_digest()
        write_summary(folder, summary)
    return merged_lines(job.records)


def _rebuild(folder: Path, force: bool) -> Path:
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise NoManifestError(f"{folder} is not a directory")
    job_dirs = find_job_dirs(folder)
    if not job_dirs:
        raise NoManifestError(f"no {MANIFEST} under {folder}: run the pipeline into it first")
    stamp = _stamp(folder, job_dirs)
    index, merged = folder / layout.INDEX, folder / layout.MERGED
    if not force and index.is_file() and merged.is_file() and _read(folder / STAMP) == stamp:
        return index
    # Threads overlap the many small synced writes (a few ms each on a journalled disk); the rest holds the GIL.
    rels = [d.relative_to(folder).as_posix() for d in job_dirs]
    groups = shard_groups([(rel, job_overrides(d)) for rel, d in zip(rels, job_dirs, strict=True)])
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        parts = list(pool.map(lambda a: _part(folder, a[0], force, groups.get(a[1])), zip(job_dirs, rels, strict=True)))
        summaries = [summary for summary, _ in parts]
        pruned = _prune(folder, summaries)
        # index.jsonl as the per-job rebuilds left it holds every job's lines unless a part had to be rebuilt
        # here, a job went away, or it was removed for being incomplete: only then is it written again
        if force or pruned or not merged.is_file() or any(job is not None for _, job in parts):
            args = [(job_dir, *part) for job_dir, part in zip(job_dirs, parts, strict=True)]
            write_bytes(merged, b"".join(pool.map(lambda a: _lines(folder, *a), args)))
    target = write_pages(folder, summaries)
    write_bytes(folder / STAMP, stamp.encode())
    return target


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def sync_report(folder: Path) -> Path:
    """Bring the whole report up to date, rebuilding only the parts of jobs whose files changed."""
    return _rebuild(folder, force=False)


def build_report(folder: Path) -> Path:
    """Rebuild every part, page and index.jsonl of ``folder`` from its job directories; return index.html."""
    return _rebuild(folder, force=True)
