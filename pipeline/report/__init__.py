"""A static, browsable report over one run or a whole multirun sweep: a light index.html, one page per model
whose jobs load as script chunks when opened, and index.jsonl (every manifest merged)."""

from pipeline.report.build import build_report, sync_report, update_job
from pipeline.report.jobs import NoManifestError

__all__ = ["NoManifestError", "build_report", "sync_report", "update_job"]
