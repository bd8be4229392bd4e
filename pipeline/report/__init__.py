"""A static, browsable report (index.html + index.jsonl) over one run or a whole multirun sweep."""

from pipeline.report.index import build_report
from pipeline.report.jobs import NoManifestError

__all__ = ["NoManifestError", "build_report"]
