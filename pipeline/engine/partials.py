"""A sharded job's partial states (``<job>/partials/<method>/<layer>.npz``): what a gathering method gathered
over the shard's images, saved instead of finishing so that a merge step (``engine.shards``) can fold the shards.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from pipeline.output.files import safe_name, write_bytes

PARTIALS = "partials"


def partial_path(root: Path, method: str, layer: str) -> Path:
    """Where a shard keeps one layer's gathered state of one method."""
    return root / PARTIALS / safe_name(method) / f"{safe_name(layer)}.npz"


def save_state(path: Path, state: dict) -> None:
    """Write a gathered state (str keys to numbers: arrays, ints, floats, lists of ints) as an .npz, atomically;
    a value that is not numbers (an object, a crop list of tuples of objects) is refused with TypeError."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            array = np.asarray(value)
            if not isinstance(key, str) or array.dtype.hasobject:
                raise TypeError(f"gathered state key {key!r} holds {type(value).__name__}, not numbers")
            entry = io.BytesIO()
            np.lib.format.write_array(entry, array, allow_pickle=False)
            archive.writestr(f"{key}.npy", entry.getvalue())
    write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict:
    """A saved state: 0-d entries as Python numbers, the others as numpy arrays (lists come back as arrays)."""
    with np.load(path, allow_pickle=False) as found:
        return {key: found[key].item() if found[key].ndim == 0 else found[key] for key in found.files}
