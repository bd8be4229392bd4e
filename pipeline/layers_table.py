"""``list_layers=true``: print each model's conv layers with their output shapes, computed on the meta device."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pipeline.models.capture import layer_hooks
from pipeline.models.custom import CustomModel
from pipeline.models.layers import ConvLayer, conv_layers
from pipeline.models.receptive import trace
from pipeline.models.registry import meta_skeleton, preprocessing


def _shapes(module: nn.Module, size: int, device: str) -> list[tuple[ConvLayer, tuple[int, ...] | None]]:
    """Each conv layer (with its receptive field) and its output shape, from one forward of a blank image."""
    shapes: dict[str, tuple[int, ...]] = {}
    layers = conv_layers(module)
    names = [layer.name for layer in layers]
    try:
        with layer_hooks(module, names, lambda n, out: shapes.setdefault(n, tuple(out.shape[1:]))), torch.no_grad():
            module.eval()(torch.zeros(1, 3, size, size, device=device))
        fields = trace(module, (size, size), device)
    except Exception:  # noqa: BLE001 - a user's model that cannot run on this input: names without shapes
        shapes.clear()
        fields = {}
    return [(dataclasses.replace(layer, receptive=fields.get(layer.name)), shapes.get(layer.name)) for layer in layers]


def layer_table(model: str | CustomModel, **kwargs) -> list[tuple[ConvLayer, tuple[int, ...] | None]]:
    """(layer, output shape [C, H, W]) for every conv layer, for one image at the model's input size."""
    if isinstance(model, CustomModel):
        crop = getattr(model.transform, "crop_size", [224])
        try:
            with torch.device("meta"):
                return _shapes(model.build(), crop[0], "meta")
        except Exception:  # noqa: BLE001 - not buildable on meta: build it for real
            return _shapes(model.build(), crop[0], "cpu")
    module = meta_skeleton(model, **kwargs)
    return _shapes(module, preprocessing(model, module=module).crop_size[0], "meta")


def format_table(model: str | CustomModel, **kwargs) -> str:
    """A plain-text table: index, dotted name, conv description, output shape, receptive field and stride."""
    rows = layer_table(model, **kwargs)
    width = max((len(layer.name) for layer, _ in rows), default=4)
    name = model.name if isinstance(model, CustomModel) else model
    lines = [
        f"{name}: {len(rows)} conv layers (index, name, layer, output C×H×W, receptive field side and stride in "
        "input pixels; + global: also reads a global pooling)"
    ]
    for layer, shape in rows:
        out = "×".join(map(str, shape)) if shape else "not run in eval mode"
        rf = layer.receptive.text() if layer.receptive is not None else ""
        lines.append(f"  {layer.index:>4}  {layer.name:<{width}}  {layer.describe():<40}  {out:<14}  {rf}".rstrip())
    return "\n".join(lines)
