"""The manifest record: one artefact's facts, shared by the engine (writes it), output/ and the report (reads it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OK, FAILED = "ok", "failed"


@dataclass
class Record:
    """One line of ``manifest.jsonl``. Method-specific facts (targets, channels, ...) live in ``extra`` and are
    written as top-level keys; ``job`` is set only in a report's merged ``index.jsonl``.

    ``image_label`` is file-name safe and unique (it is part of the PNG's name); ``image_name`` is the image as a
    person named it (unicode kept), for headers and reports. Paths: ``png``, ``raw`` (the .npy), ``thumb`` (the
    report's small JPEG) and ``attached`` (further pictures of the artefact, e.g. ``gif`` and ``stats``, written
    as top-level keys and listed under ``"attached"``). ``files`` holds the size and sha256 of each file written,
    under the same names (``{"png": {"size": .., "sha256": ..}, "gif": ...}``): how a rerun knows it is intact."""

    model: str
    weights: str
    random_weights: bool
    layer: str | None
    layer_index: int | None
    method: str
    image: str | None
    image_label: str | None
    image_name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    png: str | None = None
    raw: str | None = None
    thumb: str | None = None  # a small JPEG of the PNG for the report; absent in runs made before thumbnails
    attached: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str | None = None
    error: str | None = None
    job: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def key(self) -> tuple:
        """What identifies the artefact within a job: model, method, layer and image."""
        return (self.model, self.method, self.layer, self.image_label)

    def paths(self) -> dict[str, str]:
        """Every file of the artefact by its name (png, raw, thumb and the attached ones), as recorded."""
        found = {name: getattr(self, name) for name in ("png", "raw", "thumb") if getattr(self, name)}
        return {**found, **self.attached}

    def done(
        self,
        png: str,
        raw: str | None,
        thumb: str | None = None,
        attached: dict[str, str] | None = None,
        files: dict[str, dict[str, Any]] | None = None,
    ) -> Record:
        return dataclasses.replace(
            self,
            png=png,
            raw=raw,
            thumb=thumb,
            attached=dict(attached or {}),
            files=dict(files or {}),
            status=OK,
            error=None,
        )

    def failed(self, error: str) -> Record:
        return dataclasses.replace(
            self, png=None, raw=None, thumb=None, attached={}, files={}, status=FAILED, error=error
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object of a manifest line: fixed fields first, method extras, then files and status."""
        skip = ("extra", "job", "attached")
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        tail = {k: data.pop(k) for k in ("png", "raw", "thumb", "files", "status", "error")}
        data.update(self.extra)
        data.update({k: tail.pop(k) for k in ("png", "raw", "thumb")})
        if self.attached:
            data.update(self.attached)
            data["attached"] = list(self.attached)
        data.update(tail)
        if self.job is not None:
            data["job"] = self.job
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """A record from a manifest line; unknown keys are method extras, missing ones get neutral values."""
        data = dict(data)
        listed = data.pop("attached", None)
        listed = [k for k in listed if isinstance(data.get(k), str)] if isinstance(listed, list) else []
        attached = {k: data.pop(k) for k in listed}
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "attached"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        for key in ("model", "weights", "method"):
            known[key] = str(known.get(key, ""))
        known.setdefault("random_weights", False)
        for key in ("layer", "layer_index", "image", "image_label"):
            known.setdefault(key, None)
        for key in ("params", "model_kwargs", "files"):
            if not isinstance(known.get(key), dict):
                known[key] = {}
        return cls(**known, extra=extra, attached=attached)
