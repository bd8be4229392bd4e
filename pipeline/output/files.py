"""Atomic writes: a file is either absent or complete, never half-written (temp file, fsync, rename)."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

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


def write_png(path: Path, image: Image.Image, compress_level: int = 3) -> None:
    """Encode ``image`` as PNG (no timestamps, so equal pictures give equal bytes) and write it atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    write_bytes(path, buffer.getvalue())


def write_npy(path: Path, array: np.ndarray) -> None:
    """Save a float32 array as .npy atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
    write_bytes(path, buffer.getvalue())


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically (UTF-8, indented, keys in insertion order)."""
    write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode())
