"""The jobs under a report folder: each job directory's manifest records, run.json, status and resolved config.

A folder is one run directory or a whole multirun sweep directory; each ``manifest.jsonl`` (or job status)
found below it marks a job directory. Record paths are made relative to the folder, so the report opens from
file://.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.output.manifest import read_manifest
from pipeline.output.record import Record

MANIFEST = "manifest.jsonl"
# Written into a job directory by the Hydra callback: how the job ended (a job can fail before any manifest).
JOB_STATUS = "job_status.json"
MAX_CONFIG_CHARS = 200_000
# Every file a report reads (besides .hydra/overrides.yaml); the callback fingerprints them to skip no-op rebuilds.
INPUTS = (MANIFEST, JOB_STATUS, "run.json", "config.resolved.yaml")


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


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_overrides(job_dir: Path) -> list[str]:
    try:
        data = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    return [str(item) for item in data] if isinstance(data, list) else []


def _relative(path: str | None, job_dir: Path, folder: Path) -> str | None:
    """A manifest path (relative to its job dir, or absolute) as a POSIX path relative to the report folder."""
    if not path:
        return None
    full = Path(path) if Path(path).is_absolute() else job_dir / path
    return Path(os.path.relpath(full, folder)).as_posix()


def scan(folder: Path, names: tuple[str, ...] = INPUTS) -> list[Path]:
    """Files called one of ``names`` under ``folder``, in one walk that skips hidden folders (.submitit, .hydra)."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(Path(parent, name) for name in files if name in names)
    return found


def find_job_dirs(folder: Path) -> list[Path]:
    """Every directory under ``folder`` (itself included) that holds a manifest or a job status, in natural order."""
    found = {p.parent for p in scan(folder, (MANIFEST, JOB_STATUS))}
    return sorted(found, key=lambda p: _natural_key(p.relative_to(folder).as_posix()))


def load_job(job_dir: Path, folder: Path) -> Job:
    """Read one job directory; manifest lines gain ``job`` and get ``png``/``raw`` relative to ``folder``."""
    rel = job_dir.relative_to(folder).as_posix()
    job = Job(rel=rel, run=_read_json(job_dir / "run.json"), status=_read_json(job_dir / JOB_STATUS))
    job.overrides = _read_overrides(job_dir) or [str(o) for o in job.status.get("overrides") or []]
    if (job_dir / MANIFEST).is_file():
        for record in read_manifest(job_dir / MANIFEST):
            record.job = rel
            record.png = _relative(record.png, job_dir, folder)
            record.raw = _relative(record.raw, job_dir, folder)
            job.records.append(record)
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
