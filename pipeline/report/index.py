"""Build a report folder's index.jsonl (every job's manifest merged) and its static index.html."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.output.files import write_bytes
from pipeline.report.jobs import NoManifestError, collect
from pipeline.report.page import render_page


def build_report(folder: Path) -> Path:
    """Merge every manifest under ``folder`` into ``folder/index.jsonl`` and write ``folder/index.html``; return it."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise NoManifestError(f"{folder} is not a directory")
    jobs = collect(folder)
    lines = [json.dumps(r.to_json(), ensure_ascii=False, default=str) + "\n" for job in jobs for r in job.records]
    write_bytes(folder / "index.jsonl", "".join(lines).encode("utf-8"))
    target = folder / "index.html"
    write_bytes(target, render_page(folder.name, jobs).encode("utf-8"))
    return target
