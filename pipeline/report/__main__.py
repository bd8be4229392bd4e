"""``python -m pipeline.report FOLDER``: rebuild the whole report (index.html, model pages, index.jsonl) of a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.methods import registry
from pipeline.report.build import build_report
from pipeline.report.jobs import NoManifestError


def main(argv: list[str] | None = None) -> int:
    """Build the report for the folder given on the command line; exit 2 with one line when there is nothing."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Rebuild the static report of FOLDER from every job under it: index.html, report/ (one page per "
        "model) and index.jsonl (every manifest.jsonl merged).",
    )
    parser.add_argument("folder", type=Path, help="a run directory or a multirun sweep directory")
    args = parser.parse_args(argv)
    registry.discover()  # the methods' order, which the model pages follow
    try:
        target = build_report(args.folder)
    except NoManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
