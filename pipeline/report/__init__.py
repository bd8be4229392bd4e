"""A static, browsable report (index.html + index.jsonl) over one run or a whole multirun sweep."""

from pipeline.report.index import NoManifestError, build_report

__all__ = ["NoManifestError", "build_report"]
