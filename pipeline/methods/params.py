"""Checking a method's parameters at the door: the user's mapping in, a frozen Params instance or one clear line out.

The rules come from the dataclass itself: each field's type (``int``, ``float``, ``bool``, ``str``, a
``Literal`` of choices, ``list[int]``, optionally ``| None``) and its metadata (``min``, ``max``, ``check``:
``"colormap"``). Nothing is coerced silently: ``top_k=abc`` or ``top_k=-3`` is refused, naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

from pipeline.errors import UserError, closest


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        allows_none = len(args) < len(typing.get_args(kind))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), allows_none  # noqa: UP007
    return kind, False


def colormap_names() -> list[str]:
    import matplotlib

    return sorted(matplotlib.colormaps)


def _describe(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def check_value(key: str, value: Any, kind: Any, meta: Mapping[str, Any] | None = None) -> Any:
    """``value`` converted to ``kind`` (see the module docstring), or UserError naming ``key``."""
    meta = meta or {}
    kind, allows_none = _optional(kind)
    if value is None:
        if allows_none:
            return None
        raise UserError(f"{key}: a value is required (got null).")
    origin = typing.get_origin(kind)
    if origin is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            valid = ", ".join(str(c) for c in choices)
            raise UserError(f"{key}: {_describe(value)} is not one of {valid}.{closest(str(value), map(str, choices))}")
        return value
    if origin in (list, tuple):
        (item,) = typing.get_args(kind)[:1]
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items and meta.get("nonempty"):
            raise UserError(f"{key}: the list is empty.")
        return tuple(check_value(f"{key}[{i}]", v, item, meta) for i, v in enumerate(items))
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool and not isinstance(value, bool):
        raise UserError(f"{key}: {_describe(value)} is not true or false.")
    if kind is int and not (number and isinstance(value, int)):
        raise UserError(f"{key}: {_describe(value)} is not an integer.")
    if kind is float and not number:
        raise UserError(f"{key}: {_describe(value)} is not a number.")
    if kind is str and not isinstance(value, str):
        raise UserError(f"{key}: {_describe(value)} is not a string.")
    if kind is float:
        value = float(value)
    if "min" in meta and value < meta["min"]:
        raise UserError(f"{key}: {value} is below the minimum {meta['min']}.")
    if "max" in meta and value > meta["max"]:
        raise UserError(f"{key}: {value} is above the maximum {meta['max']}.")
    if "above" in meta and value <= meta["above"]:
        raise UserError(f"{key}: {value} must be greater than {meta['above']}.")
    if meta.get("check") == "colormap":
        names = colormap_names()
        if value not in names:
            raise UserError(f"{key}: {_describe(value)} is not a matplotlib colormap.{closest(value, names)}")
    return value


def parse_params(cls: type, raw: Mapping[str, Any] | None, prefix: str) -> Any:
    """An instance of the frozen dataclass ``cls`` from the user's mapping ``raw``; UserError on the first bad key."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        name = unknown[0]
        raise UserError(
            f"{prefix}.{name}: not a parameter of {prefix}. Valid: {', '.join(fields)}.{closest(name, fields)}"
        )
    hints = _hints(cls)
    values = {
        name: check_value(f"{prefix}.{name}", raw[name], hints[name], fields[name].metadata)
        for name in fields
        if name in raw
    }
    return cls(**values)


def changed(params: Any, because: str, *names: str) -> dict[str, str]:
    """Those of ``names`` whose value differs from the dataclass default, each mapped to ``because`` (the
    setting that makes them moot), for the no-effect warnings."""
    defaults = type(params)()
    return {n: because for n in names if getattr(params, n) != getattr(defaults, n)}
