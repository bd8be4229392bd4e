"""Render and write artefacts on a small thread pool, overlapped with model compute.

Each artefact is one picture (plus, with ``save_raw``, the float32 array it shows) and a small thumbnail of it
for the report, made from the image already in memory. Its manifest line is written the moment its files land,
and a failure while rendering or writing is recorded, never raised.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.output.files import file_facts, thumb_path, write_bytes, write_npy, write_png, write_thumbnail
from pipeline.output.manifest import Manifest
from pipeline.output.record import Record
from pipeline.render.grid import TILE_BOXES

log = logging.getLogger(__name__)
# A figure makes the picture, the exact array it shows, and further files of the same artefact
# ({manifest key: (file suffix, bytes)}, e.g. {"gif": ("gif", b"GIF89a...")}).
Figure = Callable[[], tuple[Image.Image, np.ndarray, dict[str, tuple[str, bytes]]]]


def first_line(text: object) -> str:
    """The first non-empty line of a message: libraries append advice and dumps on the lines after it."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def error_text(exc: BaseException) -> str:
    """One line: exception type and (first line of its) message, with the innermost frame for where it happened
    (none for a UserError: a bad file or setting of the user's, where our code location would only mislead)."""
    frames = [] if isinstance(exc, UserError) else traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {first_line(exc)}{where}"


class Writer:
    """Runs figure callables on ``workers`` threads, at most a few queued, and records every outcome."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        save_raw: bool = False,
        workers: int = 2,
        compress_level: int = 3,
        on_done: Callable[[Record], None] | None = None,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.save_raw = save_raw
        self.compress_level = compress_level
        self.on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")
        self._slots = threading.BoundedSemaphore(2 * workers + 2)  # bounds memory held by queued results

    def submit(self, record: Record, relative_png: str, figure: Figure) -> None:
        """Queue one artefact: ``record`` holds its manifest fields except files and status."""
        self._slots.acquire()
        try:
            self._pool.submit(self._produce, record, relative_png, figure)
        except BaseException:
            self._slots.release()
            raise

    def fail(self, record: Record, error: str) -> None:
        """Record an artefact that could not be made (e.g. its image failed to load)."""
        self._finish(record.failed(error))

    def _produce(self, record: Record, relative_png: str, figure: Figure) -> None:
        try:
            image, raw, extra_files = figure()
            stem = relative_png.removesuffix(".png")
            files, attached = {}, {}
            for name, (suffix, data) in extra_files.items():
                attached[name] = f"{stem}.{suffix}"
                write_bytes(self.root / attached[name], data)
                files[name] = file_facts(data)
            files["png"] = write_png(self.root / relative_png, image, self.compress_level)
            raw_path = None
            if self.save_raw:
                raw_path = str(Path(relative_png).with_suffix(".npy"))
                files["raw"] = write_npy(self.root / raw_path, raw)
            thumb = self._thumbnail(relative_png, image, files)
            done = record.done(relative_png, raw_path, thumb, attached, files)
            boxes = image.info.get(TILE_BOXES)
            if boxes and record.layer and record.image is None:  # a per-layer grid: the report shows its tiles alone
                done = dataclasses.replace(done, extra={**done.extra, TILE_BOXES: boxes})
        except Exception as exc:  # noqa: BLE001 - recorded in the manifest and said, the run goes on
            done = record.failed(error_text(exc))
            where = " ".join(str(part) for part in (record.model, record.method, record.layer) if part)
            log.error(
                "%s%s: picture failed: %s", where, f" {record.image_label}" if record.image_label else "", done.error
            )
        finally:
            self._slots.release()
        self._finish(done)

    def _thumbnail(self, relative_png: str, image: Image.Image, files: dict) -> str | None:
        """Write the report's thumbnail of a written PNG; a failure only costs the thumbnail (the report then
        shows the PNG itself)."""
        relative = thumb_path(relative_png)
        try:
            files["thumb"] = write_thumbnail(self.root / relative, image)
        except Exception as exc:  # noqa: BLE001 - the artefact itself is complete
            log.warning("no thumbnail for %s: %s", relative_png, error_text(exc))
            return None
        return relative

    def _finish(self, record: Record) -> None:
        self.manifest.write(record)
        if self.on_done is not None:
            self.on_done(record)

    def close(self, cancel: bool = False) -> None:
        """Wait for every queued artefact to land; with ``cancel``, only for those already being drawn (a stop:
        the others are left for the next run)."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)
