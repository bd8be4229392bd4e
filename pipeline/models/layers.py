"""Conv layers by their dotted ``named_modules()`` names, and how a user's ``layers`` setting picks them."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from torch import nn

from pipeline.errors import UserError, closest


@dataclass(frozen=True)
class ReceptiveField:
    """Where each unit of a conv layer's output looks in the input (of ``input_size``), in input pixels.

    ``rows[y]`` and ``cols[x]`` are the first and last input row / column (inclusive, clipped to the image)
    that unit (y, x) depends on; ``extent`` is the unclipped side of an interior unit's field and ``stride``
    the input pixels between neighbouring units. ``global_context``: the units also read a global summary of
    the whole input (e.g. squeeze-excitation), which no box shows."""

    input_size: tuple[int, int]
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    extent: tuple[int, int]
    stride: tuple[float, float]
    global_context: bool = False

    def spans(self, y: int, x: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Unit (y, x)'s first and last input row and column; a single entry holds for every unit (where the trace
        lost the layout, e.g. attention windows, each unit is given the union of everything)."""
        return self.rows[y if len(self.rows) > 1 else 0], self.cols[x if len(self.cols) > 1 else 0]

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (y, x)'s field, bottom and right exclusive (numpy slicing)."""
        (top, bottom), (left, right) = self.spans(y, x)
        return top, left, bottom + 1, right + 1

    def text(self) -> str:
        """E.g. "RF 35 px, stride 8" (the interior unit's side; "+ global" when SE-style context is read)."""
        (eh, ew), (sh, sw) = self.extent, self.stride
        side = f"{eh}" if eh == ew else f"{eh}×{ew}"
        step = _num(sh) if sh == sw else f"{_num(sh)}×{_num(sw)}"
        return f"RF {side} px, stride {step}" + (" + global" if self.global_context else "")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


@dataclass(frozen=True)
class ConvLayer:
    """One ``nn.Conv2d`` of a model, with the facts a header or manifest line needs."""

    index: int
    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    groups: int
    # where each unit looks in the input, when the engine traced it for the input size in use
    receptive: ReceptiveField | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        kh, kw = self.kernel_size
        groups = f", groups {self.groups}" if self.groups > 1 else ""
        return f"Conv2d {self.in_channels}→{self.out_channels}, {kh}×{kw}, stride {self.stride[0]}{groups}"


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """Every ``nn.Conv2d`` in ``named_modules()`` order (the order indices refer to)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            found.append(
                ConvLayer(
                    index=len(found),
                    name=name,
                    in_channels=module.in_channels,
                    out_channels=module.out_channels,
                    kernel_size=tuple(module.kernel_size),
                    stride=tuple(module.stride),
                    groups=module.groups,
                )
            )
    return found


def _as_list(spec) -> list:
    if spec is None:
        return ["all"]
    if isinstance(spec, (str, int)):
        return [spec]
    return list(spec)


def select_layers(layers: list[ConvLayer], spec, model_name: str = "model") -> list[ConvLayer]:
    """Pick layers by ``all``/``first``/``last``, dotted names, glob patterns, integer indices or relative depths
    (``"50%"``), in model order.

    A string is always a name and an integer always an index: ``"2"`` is the module named 2 (an ``nn.Sequential``
    names its children 0, 1, 2...), ``2`` the third conv layer (``layers=['2']`` against ``layers=[2]``)."""
    if not layers:
        raise UserError(f"layers: {model_name} has no nn.Conv2d layer.")
    by_name = {layer.name: layer for layer in layers}
    chosen: dict[int, ConvLayer] = {}
    for item in _as_list(spec):
        if isinstance(item, bool):
            raise UserError(f"layers: {item!r} is not a layer name, pattern or index.")
        text = str(item).strip()
        if isinstance(item, int):
            idx = int(text)
            if not -len(layers) <= idx < len(layers):
                raise UserError(
                    f"layers: index {idx} is out of range for {model_name}, which has {len(layers)} conv layers "
                    f"(valid: {-len(layers)}..{len(layers) - 1})."
                )
            picked = [layers[idx]]
        elif text == "all":
            picked = layers
        elif text == "first":
            picked = [layers[0]]
        elif text == "last":
            picked = [layers[-1]]
        elif text.endswith("%"):
            picked = [layers[_at_depth(text, len(layers))]]
        elif any(ch in text for ch in "*?["):
            picked = [layer for layer in layers if fnmatch.fnmatchcase(layer.name, text)]
            if not picked:
                raise UserError(
                    f"layers: pattern {text!r} matches no conv layer of {model_name}.{closest(text, by_name)}"
                )
        elif text in by_name:
            picked = [by_name[text]]
        elif _is_int(text):
            raise UserError(
                f"layers: {text!r} (a string) names no conv layer of {model_name}; for the conv layer at index "
                f"{text} give the integer: layers=[{text}], not layers=['{text}']."
            )
        else:
            raise UserError(
                f"layers: {text!r} is not a conv layer of {model_name}.{closest(text, by_name)} "
                f"See them all with: python run.py list_layers=true models={model_name}"
            )
        for layer in picked:
            chosen[layer.index] = layer
    return [chosen[i] for i in sorted(chosen)]


def _at_depth(text: str, count: int) -> int:
    """The index of the conv layer at a relative depth ``"50%"`` (0 % the first, 100 % the last, the nearest in
    between), so one spec fits models of any depth."""
    try:
        share = float(text[:-1])
    except ValueError:
        share = float("nan")
    if not 0 <= share <= 100:
        raise UserError(f"layers: {text!r} is not a relative depth; give a percentage from 0% to 100%.")
    return round(share / 100 * (count - 1))


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()
