"""The ``crop`` display option of the input-space signals: a unit's signal shown at its receptive field.

A shallow unit sees a few pixels; its signal over the whole input is a gray square with a dot. ``auto`` crops a
unit's tile to its receptive field plus a margin whenever the field's side is under a quarter of the input's
side; ``receptive`` always crops unit tiles; ``none`` never does. Class targets have no unit and are not cropped
by ``auto``. The exact full signal stays the artefact's array; only the tile is cropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.models.receptive import crop_box

if TYPE_CHECKING:
    from pipeline.models.layers import ReceptiveField

CROPS = ("auto", "receptive", "none")
MARGIN = 0.25  # of the field's side, on each side
SMALL = 4  # auto crops when the field's side is under 1/SMALL of the input's side


def signal_box(
    field: ReceptiveField | None, unit: tuple[int, int] | None, mode: str
) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) to crop unit (y, x)'s tile to under ``mode``, or None to show the whole input."""
    if mode not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {mode!r}")
    if mode == "none" or field is None or unit is None or len(field.rows) < 2 or len(field.cols) < 2:
        return None  # one span for every unit: where the trace lost the layout, no box says where the unit looks
    if mode == "auto" and max(field.extent) * SMALL >= min(field.input_size):
        return None
    return crop_box(field, unit[0], unit[1], MARGIN)


def cropped_label(label: str, box: tuple[int, int, int, int] | None) -> str:
    return label if box is None else f"{label} · cropped"
