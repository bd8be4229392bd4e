"""Atomic writes: a file is either absent or complete, never half-written (temp file, fsync, rename)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import NotOurFolder

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: mkstemp makes 0600 files, written files get the usual 0666 & ~umask


def safe_name(text: str) -> str:
    """A file-name-safe version of a layer, model or image name (dots kept: layer names stay readable)."""
    return _UNSAFE.sub("_", text).strip("_") or "_"


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(root: Path) -> int:
    """Delete the temp files of writes a killed process left half-done under ``root``; return how many."""
    removed = 0
    for path in root.rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def exclusive(path: Path, busy: str) -> Iterator[None]:
    """Hold a non-blocking ``flock`` on ``path`` for the block; raise UserError(``busy``) when another process has it.

    Where the file system cannot lock (some cluster mounts, not POSIX), the block runs unlocked."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a") as handle:
        locked = True
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NotOurFolder(busy) from None
        except OSError:
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPE = {"L": 0, "RGB": 2, "RGBA": 6}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: Image.Image, compress_level: int = 1) -> bytes:
    """PNG bytes for an 8-bit L/RGB/RGBA image: every row unfiltered, one zlib stream at ``compress_level``.

    Pillow's encoder tries up to four row filters per line; on this product's flat-colour grids that took twice
    the CPU and gave 6% larger files than no filtering (all 190 PNGs of the standard sweep: 4.4 s vs 2.4 s,
    45.0 vs 42.1 MiB at level 1; ``benchmarks/profile_sweep.py`` prints the comparison).
    """
    if image.mode not in _PNG_COLOR_TYPE:
        image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.uint8)
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + pixels[0].size), dtype=np.uint8)  # a leading 0 byte per row: filter "None"
    rows[:, 1:] = pixels.reshape(height, -1)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPE[image.mode], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows, compress_level)),
            _chunk(b"IEND", b""),
        )
    )


def file_facts(data: bytes) -> dict[str, int | str]:
    """What the manifest records of a file it lists, so a later run can tell it is still the same file."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


THUMB_PX = 256  # thumbnail width: one report card
THUMBS = "thumbs"


def thumb_path(relative_png: str) -> str:
    """Where a PNG's thumbnail goes: under ``thumbs/``, mirroring the PNG's relative path, as ``.jpg``."""
    return Path(THUMBS, relative_png).with_suffix(".jpg").as_posix()


def encode_thumbnail(image: Image.Image, width: int = THUMB_PX, quality: int = 85) -> bytes:
    """JPEG bytes of ``image`` at most ``width`` wide and ``3 * width`` tall (aspect kept, never enlarged).

    The report shows these instead of full-size PNGs scaled by the browser: a few KB each instead of a few MB of
    decoded pixels per card. A box filter (each pixel the mean of the area it covers) costs about 4 ms for a
    1000 px grid, where Lanczos took 13 ms, more than encoding the PNG itself (resnet18's 40 grids, 2026-11-26).
    """
    scale = min(1.0, width / image.width, 3 * width / image.height)
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_thumbnail(path: Path, image: Image.Image, width: int = THUMB_PX) -> dict[str, int | str]:
    """Write ``image``'s thumbnail (see encode_thumbnail) atomically; return its facts."""
    data = encode_thumbnail(image, width)
    write_bytes(path, data)
    return file_facts(data)


def same_file(path: Path, facts: object) -> bool:
    """Whether ``path`` exists with the size and sha256 in ``facts`` (the size is compared first: no read)."""
    if not isinstance(facts, dict):
        return False
    try:
        if path.stat().st_size != facts.get("size"):
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == facts.get("sha256")


def write_png(path: Path, image: Image.Image, compress_level: int = 1) -> dict[str, int | str]:
    """Encode ``image`` as PNG (no timestamps, so equal pictures give equal bytes), write it atomically; its facts."""
    data = encode_png(image, compress_level)
    write_bytes(path, data)
    return file_facts(data)


def write_npy(path: Path, array: np.ndarray) -> dict[str, int | str]:
    """Save a float32 array as .npy atomically; return its facts."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
    write_bytes(path, buffer.getvalue())
    return file_facts(buffer.getvalue())


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (UTF-8, indented, keys in insertion order)."""
    write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode())


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; an empty dict when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
