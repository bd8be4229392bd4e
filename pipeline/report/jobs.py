"""The jobs under a report folder: each job directory's manifest records, run.json, status and resolved config.

A folder is one run directory or a whole multirun sweep directory; each ``manifest.jsonl`` (or job status)
found below it marks a job directory. Record paths are made relative to the folder, so the report opens from
file://.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.output.files import read_json
from pipeline.output.record import Record

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
# Written into a job directory by the Hydra callback: how the job ended (a job can fail before any manifest).
JOB_STATUS = "job_status.json"
OVERRIDES = ".hydra/overrides.yaml"
MAX_CONFIG_CHARS = 200_000
# Every file a report reads about a job; the report fingerprints them to skip rebuilds that change nothing.
INPUTS = (MANIFEST, JOB_STATUS, "run.json", "config.resolved.yaml")
# The report's own files live here, beside index.html; the walk for job directories never enters it.
REPORT_DIR = "report"


class NoManifestError(FileNotFoundError):
    """The folder holds no manifest.jsonl (nor a job status), so there is nothing to report."""


@dataclass
class Job:
    """One job directory: its manifest lines (paths relative to the report folder) and run metadata."""

    rel: str
    records: list[Record] = field(default_factory=list)
    run: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    config_text: str | None = None
    has_config_file: bool = False
    has_manifest: bool = False
    # where each record's line starts in manifest.jsonl, and its complete lines as read
    starts: list[int] = field(default_factory=list)
    manifest: bytes = b""

    @property
    def manifest_bytes(self) -> int:
        return len(self.manifest)

    def manifest_digest(self, size: int | None = None) -> str:
        """A digest of the manifest's first ``size`` bytes (all of it by default), to tell an appended manifest
        from a replaced one."""
        return hashlib.sha256(self.manifest[:size]).hexdigest()[:32]

    @property
    def label(self) -> str:
        """What the report calls this job: its directory plus the overrides that made it."""
        name = "(this run)" if self.rel == "." else self.rel
        return f"{name}: {' '.join(self.overrides)}" if self.overrides else name

    @property
    def predictions(self) -> dict:
        value = self.run.get("predictions")
        return value if isinstance(value, dict) else {}

    @property
    def state(self) -> str:
        """COMPLETED / FAILED / REFUSED / INTERRUPTED from the callback, else run.json's running / finished /
        refused / interrupted, else unknown."""
        return str(self.status.get("status") or self.run.get("status") or "unknown")

    def records_from(self, offset: int) -> list[Record]:
        """The records whose manifest line starts at byte ``offset`` or later (those not merged yet)."""
        return [r for r, start in zip(self.records, self.starts, strict=True) if start >= offset]

    def by_model(self) -> dict[str, list[Record]]:
        """The job's artefacts per model (in the order models first appear), the last line winning where the job
        wrote the same artefact twice (a rerun into the same directory)."""
        latest: dict[tuple, Record] = {}
        for r in self.records:
            latest[r.key()] = r
        models: dict[str, list[Record]] = {}
        for r in latest.values():
            models.setdefault(str(r.model), []).append(r)
        return models


def natural_key(text: str) -> list:
    """Sort key that puts job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _read_overrides(job_dir: Path) -> list[str]:
    try:
        data = yaml.safe_load((job_dir / OVERRIDES).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in data] if isinstance(data, list) else []


def _relative(path: str | None, job_dir: Path, folder: Path, prefix: str) -> str | None:
    """A manifest path (relative to its job dir, or absolute) as a POSIX path relative to the report folder;
    ``prefix`` is the job dir's own relative path plus ``/`` (empty for the folder itself)."""
    if not path:
        return None
    if not path.startswith("/") and ".." not in path.split("/"):
        return prefix + path.removeprefix("./")  # the usual case, without a relpath per artefact
    full = Path(path) if Path(path).is_absolute() else job_dir / path
    return Path(os.path.relpath(full, folder)).as_posix()


def scan(folder: Path, names: tuple[str, ...] = INPUTS) -> list[Path]:
    """Files called one of ``names`` under ``folder``, in one walk that skips hidden folders (.submitit, .hydra)
    and the report's own folder."""
    found = []
    for parent, dirs, files in os.walk(folder):
        top = Path(parent) == folder
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (top and d == REPORT_DIR)]
        found.extend(Path(parent, name) for name in files if name in names)
    return found


def find_job_dirs(folder: Path) -> list[Path]:
    """Every directory under ``folder`` (itself included) that holds a manifest or a job status, in natural order."""
    found = {p.parent for p in scan(folder, (MANIFEST, JOB_STATUS))}
    return sorted(found, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def fingerprint(job_dir: Path) -> str:
    """A digest of the name, size and mtime of the files a job's report part is made from (a few stats)."""
    entries = []
    for name in (*INPUTS, OVERRIDES):
        try:
            stat = (job_dir / name).stat()
        except OSError:
            continue
        entries.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:32]


def read_records(path: Path) -> tuple[list[Record], list[int], bytes]:
    """A manifest's complete lines as records, where each line starts, and those complete lines.

    Split on ``\\n`` bytes only (a name may hold other line separators); a torn last line from a killed process
    is left for a later read.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records, starts, start = [], [], 0
    for line in data[:end].split(b"\n")[:-1]:
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            records.append(Record.from_json(value))
            starts.append(start)
        start += len(line) + 1
    return records, starts, data[:end]


def job_overrides(job_dir: Path) -> list[str]:
    """The overrides that made a job: Hydra's record, else what its job status says."""
    return _read_overrides(job_dir) or [str(o) for o in read_json(job_dir / JOB_STATUS).get("overrides") or []]


def load_job(job_dir: Path, folder: Path) -> Job:
    """Read one job directory; records gain ``job`` and get ``png``/``raw``/``thumb``/``files`` relative to
    ``folder``."""
    rel = job_dir.relative_to(folder).as_posix()
    job = Job(rel=rel, run=read_json(job_dir / "run.json"), status=read_json(job_dir / JOB_STATUS))
    job.overrides = _read_overrides(job_dir) or [str(o) for o in job.status.get("overrides") or []]
    if (job_dir / MANIFEST).is_file():
        job.has_manifest = True
        job.records, job.starts, job.manifest = read_records(job_dir / MANIFEST)
        unreadable = job.manifest.count(b"\n") - len(job.records)
        if unreadable:  # complete lines that are not JSON records (a torn write, an edit): say so, never silently
            log.warning(
                "report: %s: %d line(s) could not be read (torn or not JSON) and are left out",
                job_dir / MANIFEST,
                unreadable,
            )
        prefix = "" if rel == "." else rel + "/"
        for i, record in enumerate(job.records):
            record.job = rel
            record.png = _relative(record.png, job_dir, folder, prefix)
            record.raw = _relative(record.raw, job_dir, folder, prefix)
            record.thumb = _relative(record.thumb, job_dir, folder, prefix)
            record.attached = {k: _relative(v, job_dir, folder, prefix) for k, v in record.attached.items()}
            if record.thumb and not (folder / record.thumb).is_file():
                record.thumb = None  # thumbnail lost: the report shows the PNG itself
            if record.ok and record.png and not (folder / record.png).is_file():  # deleted since the run
                job.records[i] = record.failed(
                    f"file missing: {Path(record.png).name} is no longer in the folder; run the same command again "
                    "to make it"
                )
    config_file = job_dir / "config.resolved.yaml"
    if config_file.is_file():
        job.has_config_file = True
        job.config_text = config_file.read_text(encoding="utf-8", errors="replace")[:MAX_CONFIG_CHARS]
    elif isinstance(job.run.get("config"), dict):
        job.config_text = yaml.safe_dump(job.run["config"], sort_keys=False, allow_unicode=True)[:MAX_CONFIG_CHARS]
    return job


def collect(folder: Path) -> list[Job]:
    """All jobs under ``folder``; raises NoManifestError when there is none."""
    jobs = [load_job(job_dir, folder) for job_dir in find_job_dirs(folder)]
    if not jobs:
        raise NoManifestError(f"no {MANIFEST} under {folder}: run the pipeline into it first")
    return jobs
