"""A batch made to fit the model it is fed to: a grayscale model gets the photo's luma, a half-precision model
half-precision input. What a user expects of their own model, instead of torch's channel or dtype error."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from pipeline.methods.base import ModelInfo

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as Pillow's convert("L")


def input_channels(module: nn.Module) -> int | None:
    """How many channels the model's first conv layer takes (None without one)."""
    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else first.in_channels


def input_dtype(module: nn.Module) -> torch.dtype | None:
    """The floating dtype of the model's parameters (float16 for ``model.half()``), or None."""
    found = next((p for p in module.parameters() if p.is_floating_point()), None)
    return None if found is None else found.dtype


def gray_normalization(mean: tuple, std: tuple) -> tuple[tuple, tuple]:
    """The (mean, std) that ``to_gray``'s output is normalised with, per channel as the input tile wants it."""
    a = sum(1.0 / s for s in std) / len(std)
    b = sum(m / s for m, s in zip(mean, std, strict=True)) / len(std)
    return (b / a,) * 3, (1.0 / a,) * 3


def to_gray(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """A normalised RGB batch [N, 3, H, W] as one channel: the luma of the photo, normalised as each of its three
    channels was and averaged (exactly (L - m) / s when the three channels share m and s)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    luma = ((x * s + m) * w).sum(1, keepdim=True)
    return ((luma - m) / s).mean(1, keepdim=True)


def fit_input(x: torch.Tensor, module: nn.Module, info: ModelInfo) -> tuple[torch.Tensor, torch.Tensor, ModelInfo]:
    """(what the model is fed, what the input tile shows, info with the normalisation the tile undoes): RGB made
    gray for a model whose first conv takes one channel, then cast to the model's dtype (float16 after .half())."""
    if input_channels(module) == 1 and x.shape[1] == 3 and len(info.mean) == 3:
        x = to_gray(x, info.mean, info.std)
        mean, std = gray_normalization(info.mean, info.std)
        info = replace(info, mean=mean, std=std)
    shown = x
    dtype = input_dtype(module)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    return x, shown, info
