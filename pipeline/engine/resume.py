"""Resuming into a folder that already holds a run: what is verified on disk is kept, everything else is redone.

An artefact counts as done when it has an ok line in ``manifest.jsonl`` that matches what this run would make
(model, weights, method parameters, layer, image and file paths) and each file the line lists is on disk with
the size and sha256 recorded in it. The manifest is then rewritten, atomically, to exactly those lines (failed,
duplicate, stale and torn lines go), and the run appends to it. Settings that change artefacts must be those
the folder was made with: a rerun with others is refused rather than mixed in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import NotOurFolder
from pipeline.output.files import remove_stale_temps, same_file, write_bytes
from pipeline.output.record import OK, Record
from pipeline.plan import ArtefactKey, Plan

log = logging.getLogger("pipeline.engine")
MANIFEST = "manifest.jsonl"
# Top-level settings that change no artefact's bytes: a rerun may change them and still resume.
HARMLESS = frozenset({"report", "render_workers", "model_cache", "list_layers", "predictions", "device"})
# What a manifest line must agree on with this run's own record of the artefact. Method parameters are not among
# them (a line also holds what was decided at run time, e.g. a filter view ``auto`` resolved to): the settings
# check compares every parameter of the whole config instead.
IDENTITY = ("weights", "random_weights", "layer_index", "image_label", "image_name", "model_kwargs", "png", "raw")

# For an artefact key: the record this run would write (before any output) and its png / raw paths.
Expect = Callable[[ArtefactKey], tuple[Record, str, "str | None"]]


@dataclass
class Resumed:
    """What an earlier run into the same folder left that this run keeps."""

    verified: dict[ArtefactKey, str] = field(default_factory=dict)  # the manifest line kept per artefact
    predictions: dict[str, dict] = field(default_factory=dict)  # model -> image label -> top-5, from run.json
    dropped: int = 0  # manifest lines left out of the rewritten manifest


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_difference(old: object, new: object, key: str = "") -> tuple[str, object, object] | None:
    """The first dotted key at which two settings trees differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new), key=str):
            if not key and name in HARMLESS:
                continue
            found = _first_difference(old.get(name), new.get(name), f"{key}.{name}" if key else str(name))
            if found:
                return found
        return None
    return None if old == new else (key, old, new)


def check_same_settings(root: Path, previous: dict, config: dict, device: str) -> None:
    """Refuse (UserError) to resume a folder made with settings that change what the artefacts look like."""
    old = previous.get("config")
    if not isinstance(old, dict):
        raise NotOurFolder(
            f"resume: {root} holds a manifest but no run.json with the settings it was made with; "
            "choose another output folder (hydra.run.dir=...)."
        )
    changed = _first_difference(old, _plain(config))
    if changed:
        key, before, now = changed
        raise NotOurFolder(
            f"resume: {root} holds a run made with {key}={_short(before)}, this run has {key}={_short(now)}; "
            "rerun with the same settings to resume it, or choose another output folder (hydra.run.dir=...)."
        )
    if previous.get("device") not in (None, device):
        raise NotOurFolder(f"resume: {root} was made on device {previous['device']}, this run is on {device}.")


def _plain(value: object) -> object:
    """``value`` as it reads back from a JSON line (tuples become lists)."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


def matches(line: dict, record: Record, png: str, raw: str | None) -> bool:
    want = _plain({**record.to_json(), "png": png, "raw": raw})
    return all(line.get(name) == want.get(name) for name in IDENTITY)


def intact(root: Path, line: dict) -> bool:
    """Every file the line lists (png, raw, thumb, attached pictures) is on disk with its recorded size and sha256."""
    files = line.get("files") if isinstance(line.get("files"), dict) else {}
    roles = {"png", "raw", *files} - {None}
    roles = [role for role in roles if isinstance(line.get(role), str)]
    return "png" in roles and all(same_file(root / line[role], files.get(role)) for role in roles)


def resume(root: Path, plan: Plan, expect: Expect, previous: dict) -> Resumed:
    """Verify the folder's manifest against ``plan``, rewrite it to the verified lines, and say what they are."""
    planned = set(plan.artefacts())
    # a sharded run's shard 0 keeps the merge step's lines too (engine.shards), though it does not make them
    keys = {
        (k.model, k.method, k.layer, None if k.image is None else str(k.image)): k for k in [*planned, *plan.merged()]
    }
    kept: dict[ArtefactKey, str] = {}
    lines = (root / MANIFEST).read_text(encoding="utf-8", errors="replace").splitlines()
    for text in lines:
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if not isinstance(line, dict) or line.get("status") != OK:
            continue
        key = keys.get((line.get("model"), line.get("method"), line.get("layer"), line.get("image")))
        if key is None or not matches(line, *expect(key)) or not intact(root, line):
            continue
        kept.pop(key, None)  # the last good line of an artefact wins
        kept[key] = text
    write_bytes(root / MANIFEST, "".join(f"{text}\n" for text in kept.values()).encode("utf-8"))
    stale = remove_stale_temps(root)
    predictions = previous.get("predictions") if isinstance(previous.get("predictions"), dict) else {}
    verified = {key: text for key, text in kept.items() if key in planned}
    resumed = Resumed(verified, predictions, dropped=len(lines) - len(kept))
    log.info(
        "resuming in %s: %d of %d artefacts already there and intact%s",
        root,
        len(verified),
        len(planned),
        f"; {stale} half-written temp file(s) removed" if stale else "",
    )
    return resumed
