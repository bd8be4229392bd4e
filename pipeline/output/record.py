"""The manifest record: one artefact's facts, shared by the engine (writes it), output/ and the report (reads it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OK, FAILED = "ok", "failed"


@dataclass
class Record:
    """One line of ``manifest.jsonl``. Method-specific facts (targets, channels, ...) live in ``extra`` and are
    written as top-level keys; ``files`` are further files of the artefact (e.g. ``gif``, ``stats``), written
    as top-level keys too and listed under ``"files"``; ``job`` is set only in a report's ``index.jsonl``."""

    model: str
    weights: str
    random_weights: bool
    layer: str | None
    layer_index: int | None
    method: str
    image: str | None
    image_label: str | None
    params: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    png: str | None = None
    raw: str | None = None
    thumb: str | None = None  # a small JPEG of the PNG for the report; absent in runs made before thumbnails
    files: dict[str, str] = field(default_factory=dict)
    status: str | None = None
    error: str | None = None
    job: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def key(self) -> tuple:
        """What identifies the artefact within a job: model, method, layer and image."""
        return (self.model, self.method, self.layer, self.image_label)

    def done(self, png: str, raw: str | None, thumb: str | None = None) -> Record:
        return dataclasses.replace(self, png=png, raw=raw, thumb=thumb, status=OK, error=None)

    def failed(self, error: str) -> Record:
        return dataclasses.replace(self, png=None, raw=None, thumb=None, files={}, status=FAILED, error=error)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of a manifest line: fixed fields first, method extras, then files and status."""
        skip = ("extra", "job", "files")
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        tail = {k: data.pop(k) for k in ("png", "raw", "thumb", "status", "error")}
        data.update(self.extra)
        data.update(tail)
        if self.files:
            data.update(self.files)
            data["files"] = list(self.files)
        if self.job is not None:
            data["job"] = self.job
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """A record from a manifest line; unknown keys are method extras, missing ones get neutral values."""
        data = dict(data)
        listed = data.pop("files", None)
        listed = [k for k in listed if isinstance(data.get(k), str)] if isinstance(listed, list) else []
        files = {k: data.pop(k) for k in listed}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "files"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        for key in ("model", "weights", "method"):
            known[key] = str(known.get(key, ""))
        known.setdefault("random_weights", False)
        for key in ("layer", "layer_index", "image", "image_label"):
            known.setdefault(key, None)
        for key in ("params", "model_kwargs"):
            if not isinstance(known.get(key), dict):
                known[key] = {}
        return cls(**known, extra=extra, files=files)
