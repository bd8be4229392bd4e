"""A seed-style implementation of the sweep, written plainly the way tutorials do it: the baseline to beat.

For every conv layer: a matplotlib figure with one subplot per filter; for every image a fresh full forward
with a hook that keeps that layer's output, and a figure with one subplot per feature map; for guided
backprop, a fresh full forward and a backward for every single target channel, with guided ReLU done by
full backward hooks on the ``nn.ReLU`` modules. One ``savefig`` per grid, same PNG count as the product.

It is deliberately *not* made slower than a careful tutorial: parameters are frozen (no weight gradients),
each photo is decoded and preprocessed once per model, and it runs inside the already-warm benchmark process
(no interpreter start or imports are charged to it). Each of these favours the baseline.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from floor import conv_names, pick_layers
from PIL import Image
from torch import nn
from torchvision.models import get_model, get_model_weights

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _guided_hook(_module: nn.Module, grad_input: tuple, _grad_output: tuple) -> tuple:
    return (grad_input[0].clamp(min=0),)


def load(name: str, guided: bool, seed: int = 0) -> nn.Module:
    """A randomly initialised torchvision model in eval mode; guided-ReLU backward hooks if asked."""
    torch.manual_seed(seed)
    model = get_model(name, weights=None)
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # keep the hooked conv outputs unmodified
            if guided:
                module.register_full_backward_hook(_guided_hook)
    return model


def layer_output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run the whole model on ``x`` and return what ``layer`` produced."""
    saved = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.__setitem__("out", out))
    try:
        model(x)
    finally:
        handle.remove()
    return saved["out"]


def save_grid(tiles: list[tuple[np.ndarray, str | None, str]], title: str, path: Path, tile_px: int) -> None:
    """One matplotlib subplot per (image, cmap, label) tile, a suptitle, one savefig."""
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    size = tile_px / 100
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (size + 0.2), rows * (size + 0.35) + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, cmap, label) in zip(axes.flat, tiles, strict=False):
        ax.imshow(image, cmap=cmap)
        ax.set_title(label, fontsize=6)
    fig.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stretch(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min() + 1e-8)


def plot_filters(name: str, layer: str, conv: nn.Conv2d, path: Path, max_filters: int = 64) -> None:
    """The first filters of a conv layer: RGB tiles for 3-channel inputs, else the mean over inputs."""
    tiles = []
    for i, f in enumerate(conv.weight.detach()[:max_filters]):
        if f.shape[0] == 3:
            tiles.append((_stretch(f.permute(1, 2, 0).numpy()), None, f"#{i}"))
        else:
            tiles.append((f.mean(0).numpy(), "RdBu_r", f"#{i}"))
    save_grid(tiles, f"{name} filters {layer}", path, 64)


def input_picture(x: torch.Tensor) -> np.ndarray:
    """A preprocessed image [3, H, W] back to displayable RGB."""
    return np.clip(x.permute(1, 2, 0).numpy() * STD + MEAN, 0, 1)


def plot_feature_maps(model, name, layer, conv, x, label, path, top: int = 64) -> None:
    """A fresh full forward for one image, then the ``top`` channels by mean activation."""
    with torch.no_grad():
        act = layer_output(model, conv, x.unsqueeze(0))[0]
    order = act.mean(dim=(1, 2)).argsort(descending=True)[:top]
    tiles = [(input_picture(x), None, "input")]
    tiles += [(act[c].numpy(), "viridis", f"ch {int(c)}") for c in order]
    save_grid(tiles, f"{name} feature maps {layer} {label}", path, 96)


def plot_guided(model, name, layer, conv, x, label, path, top_k: int = 8) -> None:
    """Guided backprop for the ``top_k`` channels by max activation: one forward + backward per target."""
    tiles = [(input_picture(x), None, "input")]
    channels: list[int] = []
    for t in range(top_k):
        xg = x.unsqueeze(0).clone().requires_grad_(True)
        act = layer_output(model, conv, xg)[0]
        if t == 0:
            peaks = act.detach().flatten(1).max(dim=1).values
            channels = peaks.topk(min(top_k, act.shape[0])).indices.tolist()
        if t >= len(channels):
            break
        act[channels[t]].max().backward()
        grad = xg.grad[0].permute(1, 2, 0).numpy()
        tiles.append((_stretch(grad), None, f"ch {channels[t]}"))
    save_grid(tiles, f"{name} guided backprop {layer} {label}", path, 160)


def naive_sweep(
    models: list[str], photos: list[Path], methods: list[str], out: Path, layers: str | tuple = "all"
) -> dict:
    """Produce the sweep's PNGs the seed way under ``out``; return seconds and the PNG count."""
    started = time.perf_counter()
    pngs = 0
    for name in models:
        model = load(name, guided="guided_backprop" in methods)
        transform = get_model_weights(name).DEFAULT.transforms()
        inputs = {p.stem: transform(Image.open(p).convert("RGB")) for p in photos}
        modules = dict(model.named_modules())
        for layer in pick_layers(conv_names(model), layers):
            conv = modules[layer]
            if "filters" in methods:
                plot_filters(name, layer, conv, out / name / "filters" / f"{layer}.png")
                pngs += 1
            for label, x in inputs.items():
                if "feature_maps" in methods:
                    path = out / name / "feature_maps" / f"{layer}__{label}.png"
                    plot_feature_maps(model, name, layer, conv, x, label, path)
                    pngs += 1
                if "guided_backprop" in methods:
                    path = out / name / "guided_backprop" / f"{layer}__{label}.png"
                    plot_guided(model, name, layer, conv, x, label, path)
                    pngs += 1
    return {"seconds": time.perf_counter() - started, "pngs": pngs}
