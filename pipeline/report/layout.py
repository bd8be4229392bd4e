"""Where a report's files go inside its folder, so every page module agrees on relative links.

``index.html`` sits in the folder; ``report/models/<model>.html`` is one page per model; ``report/jobs/<job>/``
holds each job's ``summary.json`` and one script chunk per model, which the model page loads when opened.
"""

from __future__ import annotations

import hashlib
import re

from pipeline.output.files import safe_name
from pipeline.report.jobs import REPORT_DIR

INDEX = "index.html"
MERGED = "index.jsonl"
SUMMARY = "summary.json"
JOBS = f"{REPORT_DIR}/jobs"
MODELS = f"{REPORT_DIR}/models"
UP_FROM_PAGE = "../../"  # from a page in report/models/ back to the report folder
_CLEAN = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")


def slug(text: str) -> str:
    """A file-name-safe, collision-free name: the text itself when it is plain lower-case, else a cleaned
    prefix plus a hash (so ``a<b`` and ``a_b`` never share a file, also on case-insensitive disks)."""
    if _CLEAN.fullmatch(text):
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe_name(text).strip('._-')[:60] or 'x'}-{digest}"


def job_part(rel: str) -> str:
    """The folder of a job's report part (its summary and chunks), relative to the report folder."""
    return f"{JOBS}/{slug(rel)}"


def chunk(rel: str, model: str) -> str:
    """The script chunk holding one job's artefacts of one model, relative to the report folder."""
    return f"{job_part(rel)}/{slug(model)}.js"


def model_page(model: str) -> str:
    """A model's page, relative to the report folder."""
    return f"{MODELS}/{slug(model)}.html"


def section_id(rel: str) -> str:
    """The element id of a job's section on a model page (also its URL fragment)."""
    return f"j-{slug(rel)}"
