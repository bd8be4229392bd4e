"""Conv layers by their dotted ``named_modules()`` names, and how a user's ``layers`` setting picks them."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn

from pipeline.errors import UserError, closest

if TYPE_CHECKING:
    from pipeline.models.receptive import ReceptiveField


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
    """Pick layers by ``all``/``first``/``last``, dotted names, glob patterns or integer indices, in model order."""
    if not layers:
        raise UserError(f"layers: {model_name} has no nn.Conv2d layer.")
    by_name = {layer.name: layer for layer in layers}
    chosen: dict[int, ConvLayer] = {}
    for item in _as_list(spec):
        if isinstance(item, bool):
            raise UserError(f"layers: {item!r} is not a layer name, pattern or index.")
        text = str(item).strip()
        if isinstance(item, int) or _is_int(text):
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
        elif any(ch in text for ch in "*?["):
            picked = [layer for layer in layers if fnmatch.fnmatchcase(layer.name, text)]
            if not picked:
                raise UserError(
                    f"layers: pattern {text!r} matches no conv layer of {model_name}.{closest(text, by_name)}"
                )
        elif text in by_name:
            picked = [by_name[text]]
        else:
            raise UserError(
                f"layers: {text!r} is not a conv layer of {model_name}.{closest(text, by_name)} "
                f"See them all with: python run.py list_layers=true models={model_name}"
            )
        for layer in picked:
            chosen[layer.index] = layer
    return [chosen[i] for i in sorted(chosen)]


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()
