"""``list_layers=true``: print each model's conv layers with their output shapes, computed on the meta device."""

from __future__ import annotations

import torch

from pipeline.models.capture import layer_hooks
from pipeline.models.layers import ConvLayer, conv_layers
from pipeline.models.registry import meta_skeleton, preprocessing


def layer_table(model: str, **kwargs) -> list[tuple[ConvLayer, tuple[int, ...] | None]]:
    """(layer, output shape [C, H, W]) for every conv layer, for one image at the model's input size."""
    module = meta_skeleton(model, **kwargs).eval()
    size = preprocessing(model, module=module).crop_size[0]
    shapes: dict[str, tuple[int, ...]] = {}
    layers = conv_layers(module)
    with (
        layer_hooks(
            module, [layer.name for layer in layers], lambda n, out: shapes.setdefault(n, tuple(out.shape[1:]))
        ),
        torch.no_grad(),
    ):
        module(torch.empty(1, 3, size, size, device="meta"))
    return [(layer, shapes.get(layer.name)) for layer in layers]


def format_table(model: str, **kwargs) -> str:
    """A plain-text table: index, dotted name, conv description, output shape."""
    rows = layer_table(model, **kwargs)
    width = max(len(layer.name) for layer, _ in rows)
    lines = [f"{model}: {len(rows)} conv layers (index, name, layer, output C×H×W)"]
    for layer, shape in rows:
        out = "×".join(map(str, shape)) if shape else "not run in eval mode"
        lines.append(f"  {layer.index:>4}  {layer.name:<{width}}  {layer.describe():<40}  {out}")
    return "\n".join(lines)
