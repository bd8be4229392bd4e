"""``python -m pipeline.report FOLDER``: (re)build index.html and index.jsonl over a run or a multirun sweep dir."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.report.index import build_report
from pipeline.report.jobs import NoManifestError


def main(argv: list[str] | None = None) -> int:
    """Build the report for the folder given on the command line; exit 2 with one line when there is nothing."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Merge every manifest.jsonl under FOLDER into FOLDER/index.jsonl and a static FOLDER/index.html.",
    )
    parser.add_argument("folder", type=Path, help="a run directory or a multirun sweep directory")
    args = parser.parse_args(argv)
    try:
        target = build_report(args.folder)
    except NoManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
