"""Receptive fields: the input box each unit of every conv layer sees, traced once per (model, input size).

One blank image runs through the model under a ``TorchFunctionMode`` that keeps, beside every tensor with
spatial axes, the input rows and columns each of its rows and columns depends on (one interval per position,
the union over channels). Convolutions, pooling windows and padding compose those intervals exactly, borders
clipped, so branching graphs (inception, densenet, residuals) come out right; element-wise ops take the union
of their operands, and a tensor whose layout cannot be followed (attention windows) depends on the union of
everything it came from. A global pooling (squeeze-excitation) is *context*: broadcast back onto a map it marks
the units ``global_context`` without growing their box, so the box stays the local region a crop should show.
"""

from __future__ import annotations

import logging
import math
import weakref
from contextlib import suppress
from copy import deepcopy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pipeline.models.capture import layer_hooks
from pipeline.models.layers import ReceptiveField, conv_layers

log = logging.getLogger("pipeline.models")
_EMPTY = (1 << 40, -(1 << 40))  # an interval with no pixel: the identity of a union


@dataclass
class _Spans:
    """A traced tensor's dependence on the input: per position of its (h, w) axes, an interval of input rows /
    columns. ``dims`` are those axes counted from the end (None: layout lost, one interval for everything)."""

    rows: np.ndarray  # [h, 2] int64
    cols: np.ndarray  # [w, 2]
    extent: tuple[int, int]
    step: tuple[float, float]
    dims: tuple[int, int] | None = (-2, -1)
    context: bool = False

    def union(self) -> tuple[np.ndarray, np.ndarray]:
        return _hull(self.rows), _hull(self.cols)


def _hull(spans: np.ndarray) -> np.ndarray:
    return np.array([[spans[:, 0].min(), spans[:, 1].max()]], dtype=np.int64)


def _window(spans: np.ndarray, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per output position, the union of the spans at its window ``index`` [m, k] where ``valid``."""
    valid = valid & (index >= 0) & (index < len(spans))
    safe = np.clip(index, 0, len(spans) - 1)
    lo = np.where(valid, spans[safe, 0], _EMPTY[0]).min(1)
    hi = np.where(valid, spans[safe, 1], _EMPTY[1]).max(1)
    return np.stack([lo, hi], 1)


def _sliding(spans: np.ndarray, out: int, kernel: int, stride: int, pad: int, dilation: int) -> np.ndarray:
    index = np.arange(out)[:, None] * stride - pad + dilation * np.arange(kernel)[None, :]
    return _window(spans, index, np.ones_like(index, dtype=bool))


def _adaptive(spans: np.ndarray, out: int) -> np.ndarray:
    n = len(spans)
    start = np.array([(i * n) // out for i in range(out)])
    end = np.array([-(-((i + 1) * n) // out) for i in range(out)])
    index = start[:, None] + np.arange(int((end - start).max()))[None, :]
    return _window(spans, index, index < end[:, None])


def _pair(value, default=None) -> tuple[int, int]:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        value = default
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _bind(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict:
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")


def _windowed(name: str, src: _Spans, args: tuple, kwargs: dict, out: torch.Tensor) -> _Spans | None:
    """Convolutions and pooling windows: each output position sees a window of input positions."""
    h, w = out.shape[-2:]
    if name == "conv2d":
        p = _bind(_CONV, args, kwargs)
        kernel = tuple(p["weight"].shape[-2:])
        stride, dilation = _pair(p.get("stride", 1)), _pair(p.get("dilation", 1))
        padding = p.get("padding", 0)
        if isinstance(padding, str):  # "valid" or "same" (torch puts the odd pixel at the end)
            padding = (
                (0, 0) if padding == "valid" else tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
            )
        padding = _pair(padding)
    elif name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        p = _bind(_MAX if name.startswith("max") else _AVG, args, kwargs)
        kernel = _pair(p["kernel_size"])
        stride, padding = _pair(p.get("stride"), kernel), _pair(p.get("padding", 0))
        dilation = _pair(p.get("dilation", 1))
    else:  # adaptive pools: windows of n/out positions
        rows, cols = _adaptive(src.rows, h), _adaptive(src.cols, w)
        sides = (len(src.rows), len(src.cols))
        ext = tuple(e + (-(-n // m) - 1) * s for e, n, m, s in zip(src.extent, sides, (h, w), src.step, strict=True))
        step = (src.step[0] * len(src.rows) / h, src.step[1] * len(src.cols) / w)
        pooled = (h, w) == (1, 1) and (len(src.rows), len(src.cols)) != (1, 1)
        return _Spans(rows, cols, ext, step, context=src.context or pooled)
    rows = _sliding(src.rows, h, kernel[0], stride[0], padding[0], dilation[0])
    cols = _sliding(src.cols, w, kernel[1], stride[1], padding[1], dilation[1])
    ext = tuple(e + d * (k - 1) * s for e, d, k, s in zip(src.extent, dilation, kernel, src.step, strict=True))
    return _Spans(rows, cols, ext, (src.step[0] * stride[0], src.step[1] * stride[1]), context=src.context)


def _padded(src: _Spans, args: tuple, kwargs: dict) -> _Spans:
    p = _bind(("input", "pad", "mode", "value"), args, kwargs)
    pad, mode = [*p["pad"], 0, 0, 0, 0], p.get("mode") or "constant"

    def axis(spans: np.ndarray, before: int, after: int) -> np.ndarray:
        n = len(spans)
        old = np.arange(n + before + after) - before
        if mode == "reflect":
            old = np.abs(old)
            old = np.where(old > n - 1, 2 * (n - 1) - old, old)
        elif mode == "replicate":
            old = np.clip(old, 0, n - 1)
        elif mode == "circular":
            old = old % n
        return _window(spans, old[:, None], np.ones((len(old), 1), dtype=bool))

    return _Spans(
        axis(src.rows, pad[2], pad[3]), axis(src.cols, pad[0], pad[1]), src.extent, src.step, context=src.context
    )


def _sizes(t: torch.Tensor, dims: tuple[int, int]) -> tuple[int, int] | None:
    if t.dim() < -min(dims):
        return None
    return int(t.shape[dims[0]]), int(t.shape[dims[1]])


def _moved(name: str, src: _Spans, args: tuple, kwargs: dict, ndim: int) -> tuple[int, int] | None:
    """Where permute / transpose put the spatial axes (counted from the end), or None."""
    if name == "permute":
        order = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        order = [int(d) % ndim for d in (order or kwargs.get("dims", ()))]
        where = [order.index(d % ndim) - ndim for d in src.dims]
    else:
        a, b = (int(v) % ndim for v in [*args[1:3], kwargs.get("dim0"), kwargs.get("dim1")][:2])
        swap = {a: b, b: a}
        where = [swap.get(d % ndim, d % ndim) - ndim for d in src.dims]
    return (where[0], where[1])


def _combined(sources: list[tuple[torch.Tensor, _Spans]], out: torch.Tensor, dims: tuple[int, int] | None) -> _Spans:
    """An element-wise (or layout-keeping) op: per position the union of every operand's spans there; an
    operand that only broadcasts adds its whole field to every position (or, as context, just the flag)."""
    size = _sizes(out, dims) if dims is not None else None
    h, w = size if size is not None else (1, 1)
    rows = np.tile(np.array([_EMPTY], dtype=np.int64), (h, 1))
    cols = np.tile(np.array([_EMPTY], dtype=np.int64), (w, 1))
    extent, step, context = (0, 0), (1.0, 1.0), False
    for t, s in sources:
        context |= s.context
        if dims is not None and s.dims is not None and _sizes(t, s.dims) == (h, w):
            r, c = s.rows, s.cols
            extent, step = (max(extent[0], s.extent[0]), max(extent[1], s.extent[1])), s.step
        elif s.context and s.dims is not None and _sizes(t, s.dims) == (1, 1):
            continue
        else:
            r, c = s.union()
            extent = (max(extent[0], s.extent[0]), max(extent[1], s.extent[1]))
        rows = np.stack([np.minimum(rows[:, 0], r[:, 0]), np.maximum(rows[:, 1], r[:, 1])], 1)
        cols = np.stack([np.minimum(cols[:, 0], c[:, 0]), np.maximum(cols[:, 1], c[:, 1])], 1)
    return _Spans(rows, cols, extent, step, dims, context)


_WINDOWED = {
    "conv2d",
    "max_pool2d",
    "max_pool2d_with_indices",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
}


class _Tracer(TorchFunctionMode):
    """Runs every op as usual and records the spans of each tensor it returns (weakly keyed by identity)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: dict[int, tuple[weakref.ref, _Spans]] = {}

    def put(self, t: torch.Tensor, spans: _Spans) -> None:
        self.spans[id(t)] = (weakref.ref(t), spans)

    def get(self, t) -> _Spans | None:
        found = self.spans.get(id(t)) if isinstance(t, torch.Tensor) else None
        return found[1] if found is not None and found[0]() is t else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        sources = [(t, s) for t in _tensors(args, kwargs) if (s := self.get(t)) is not None]
        if not sources:
            return out
        name = getattr(func, "__name__", "").lstrip("_")
        for result in _tensors((out,), {}):
            if result.dim() >= 2:
                self.put(result, self._spans(name, sources, args, kwargs, result))
            if name in ("max_pool2d_with_indices", "max_pool2d"):
                break  # the indices of max_pool2d(return_indices=True) are not a signal
        return out

    def _spans(self, name: str, sources, args, kwargs, out: torch.Tensor) -> _Spans:
        first, spans = sources[0]
        spatial = spans.dims == (-2, -1) and first is args[0]
        if spatial and name in _WINDOWED:
            return _windowed(name, spans, args, kwargs, out)
        if spatial and name == "pad":
            return _padded(spans, args, kwargs)
        if name in ("permute", "transpose", "swapaxes", "swapdims") and spans.dims is not None and first is args[0]:
            return _combined(sources, out, _moved(name, spans, args, kwargs, out.dim()))
        for t, s in sources:
            if s.dims is not None and _sizes(out, s.dims) == _sizes(t, s.dims):
                return _combined(sources, out, s.dims)
        for t, s in sources:  # a global reduction that keeps its axes (x.mean((2, 3), keepdim=True))
            if s.dims is not None and _sizes(out, s.dims) == (1, 1) and _sizes(t, s.dims) != (1, 1):
                pooled = _combined(sources, out, None)
                return _Spans(pooled.rows, pooled.cols, pooled.extent, pooled.step, s.dims, True)
        return _combined(sources, out, None)


def _tensors(args, kwargs):
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def _field(spans: _Spans, size: tuple[int, int]) -> ReceptiveField:
    def clip(axis: np.ndarray, n: int) -> tuple[tuple[int, int], ...]:
        lo, hi = np.maximum(axis[:, 0], 0), np.minimum(axis[:, 1], n - 1)
        return tuple((int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    if spans.dims is None:  # layout lost: every unit sees the union of everything
        r, c = spans.union()
        spans = _Spans(r, c, spans.extent, spans.step, None, spans.context)
    step = tuple(float(round(s, 3)) for s in spans.step)
    extent = (round(min(spans.extent[0], 10**6)), round(min(spans.extent[1], 10**6)))
    return ReceptiveField(size, clip(spans.rows, size[0]), clip(spans.cols, size[1]), extent, step, spans.context)


def trace(
    module: nn.Module, size: tuple[int, int], device: torch.device | str | None = None
) -> dict[str, ReceptiveField]:
    """Every conv layer's receptive field for inputs of ``size`` (H, W), by name; one forward of a blank image
    (on ``device``, default: where the parameters are; the meta device costs nothing). Layers that never run
    are left out."""
    if device is None:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
    h, w = size
    x = torch.zeros(1, 3, h, w, device=device)
    identity = _Spans(np.stack([np.arange(h)] * 2, 1), np.stack([np.arange(w)] * 2, 1), (1, 1), (1.0, 1.0))
    tracer = _Tracer()
    tracer.put(x, identity)
    found: dict[str, ReceptiveField] = {}

    names = [layer.name for layer in conv_layers(module)]

    def on_output(name: str, out: torch.Tensor) -> None:
        spans = tracer.get(out)
        if spans is not None and name not in found:
            found[name] = _field(spans, (h, w))
        if len(found) == len(names):
            raise _Done  # the head after the last conv adds nothing

    training = module.training
    try:
        with torch.no_grad(), layer_hooks(module.eval(), names, on_output), tracer, suppress(_Done):
            module(x)
    finally:
        module.train(training)
    return found


class _Done(Exception):
    """Ends the traced forward once every conv layer has been seen."""


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hookless_copy(module: nn.Module) -> nn.Module:
    """The model's structure sharing its parameters and buffers (no memory), without hooks: tracing it never
    calls the model itself (whose hooks, e.g. a user's, would see one extra forward)."""
    copy = deepcopy(module, {id(t): t for t in [*module.parameters(), *module.buffers()]})
    for m in copy.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
            hooks.clear()
    return copy


def receptive_fields(module: nn.Module, size: tuple[int, int]) -> dict[str, ReceptiveField]:
    """``trace`` of a hook-less copy of the model (one forward of one blank image), cached per (model object, input
    size); a model it cannot run on gets {} and a warning."""
    per_model = _CACHE.setdefault(module, {})
    size = (int(size[0]), int(size[1]))
    if size not in per_model:
        try:
            per_model[size] = trace(hookless_copy(module), size)
        except Exception as exc:  # noqa: BLE001 - receptive fields are an aid; a model they fail on still runs
            log.warning("receptive fields not traced for %s: %s", type(module).__name__, exc)
            per_model[size] = {}
    return per_model[size]


def crop_box(field: ReceptiveField, y: int, x: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    """A square around unit (y, x)'s field: the interior field's side widened by ``margin`` × that side on each
    side (so every crop of a layer shows the same scale), centred on the unit, shifted inside the image."""
    height, width = field.input_size
    side = min(height, width, math.ceil(max(field.extent) * (1 + 2 * margin)))

    def span(first: int, last: int, extent: int, n: int) -> tuple[int, int]:
        if last - first + 1 < extent:  # clipped at a border: where the unclipped field lies
            first, last = (last + 1 - extent, last) if first == 0 else (first, first + extent - 1)
        start = min(max(0, math.floor((first + last + 1 - side) / 2)), n - side)
        return start, start + side

    rows, cols = field.spans(y, x)
    (top, bottom), (left, right) = span(*rows, field.extent[0], height), span(*cols, field.extent[1], width)
    return top, left, bottom, right
