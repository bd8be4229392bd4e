"""``manifest.jsonl``: one JSON line per artefact, flushed and synced the moment the artefact lands."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pipeline.output.record import Record


class Manifest:
    """Append-only JSON Lines file shared by render threads; each line is complete on disk once written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.ok = 0
        self.failed: list[Record] = []

    def write(self, record: Record) -> None:
        if record.status is None:
            raise ValueError("a manifest record needs a status")
        line = json.dumps(record.to_json(), ensure_ascii=False, default=str)
        with self._lock:
            self._handle.write(line + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
            if record.ok:
                self.ok += 1
            else:
                self.failed.append(record)

    def close(self) -> None:
        with self._lock:
            self._handle.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_lines(path: Path) -> list[dict]:
    """Every complete JSON object line of a manifest (a torn last line from a killed process is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            records.append(data)
    return records


def read_manifest(path: Path) -> list[Record]:
    """All complete records of a manifest."""
    return [Record.from_json(data) for data in read_lines(path)]
