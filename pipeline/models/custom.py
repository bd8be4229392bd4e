"""A user's own model: built by ``hydra.utils.instantiate`` from a ``_target_`` mapping in ``models``, or handed
over as an ``nn.Module`` through the Python API, with optional checkpoint and preprocessing.

Its layers come from ``named_modules()`` as for torchvision models. A module handed over in memory is never
changed: no freezing, no moving; the Python API switches it to eval mode for the run and back afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms._presets import ImageClassification

from pipeline.errors import UserError
from pipeline.models.layers import ConvLayer, conv_layers
from pipeline.models.registry import LoadedModel, WeightsChoice, imagenet_categories, read_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS_KEYS = {"resize": int, "crop": int, "mean": list, "std": list}


@dataclass(frozen=True)
class Preprocess:
    """ImageNet-style preprocessing: resize the short side, centre-crop, normalise (ImageNet's by default)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def transform(self) -> ImageClassification:
        return ImageClassification(crop_size=self.crop, resize_size=self.resize, mean=self.mean, std=self.std)


def preprocess_from(raw: Any, where: str) -> Preprocess:
    """A Preprocess from the user's mapping; UserError naming a bad key or value."""
    if raw is None:
        return Preprocess()
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}.preprocess: {raw!r} is not a mapping of resize, crop, mean, std.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in PREPROCESS_KEYS:
            raise UserError(f"{where}.preprocess.{key}: not a key; valid: {', '.join(PREPROCESS_KEYS)}.")
        if PREPROCESS_KEYS[key] is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{where}.preprocess.{key}: {value!r} is not a positive integer.")
            values[key] = value
        else:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if len(items) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
                raise UserError(f"{where}.preprocess.{key}: {value!r} is not three numbers.")
            values[key] = tuple(float(v) for v in items)
    return Preprocess(**values)


def normalization(transform: Callable) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a transform normalises with, to show the input as the model saw it: its own ``mean`` and
    ``std`` (torchvision's presets), a ``Normalize`` inside a ``Compose``, else none (0 and 1)."""
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    if mean is not None and std is not None:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    for step in getattr(transform, "transforms", []) or []:
        found = normalization(step)
        if found != ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
            return found
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


@dataclass(eq=False)
class CustomModel:
    """How to get a user's model: ``build`` makes it (instantiate a target, or return a given module)."""

    name: str
    build: Callable[[], nn.Module]
    label: str
    checkpoint: Path | None = None
    transform: Callable = field(default_factory=lambda: Preprocess().transform())
    given: bool = False  # an nn.Module handed over in memory: used as it is, never changed

    def layers(self) -> list[ConvLayer]:
        """Its conv layers: from a meta-device build when it allows one (no memory), else a real one."""
        try:
            with torch.device("meta"):
                return conv_layers(self.build())
        except Exception:  # noqa: BLE001 - user code that cannot build on meta is built for real
            return conv_layers(self.build())

    @property
    def weights(self) -> WeightsChoice:
        return WeightsChoice("custom", self.label)

    def load(self, device: str | torch.device = "cpu") -> LoadedModel:
        """The model ready to run: instantiated, checkpoint loaded with weights_only=True, eval, frozen
        (a module handed over in memory is used as it is)."""
        module = self.build()
        if not self.given:
            if self.checkpoint is not None:
                result = module.load_state_dict(read_checkpoint(self.checkpoint), strict=False)
                missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
                if missing or result.unexpected_keys:
                    raise UserError(
                        f"weights: checkpoint {self.checkpoint.name} does not fit {self.name}: {len(missing)} missing "
                        f"keys (e.g. {missing[:2]}), {len(result.unexpected_keys)} unexpected "
                        f"(e.g. {result.unexpected_keys[:2]})."
                    )
            module = module.eval().requires_grad_(False).to(device)
        # ImageNet's names; dropped wherever the logits turn out not to be ImageNet's 1000 classes
        return LoadedModel(self.name, self.weights, module, self.transform, imagenet_categories())


def from_config(entry: Mapping[str, Any], where: str) -> CustomModel:
    """A CustomModel from a ``models`` entry such as ``{_target_: mypkg.nets.build, name: mynet, weights: x.pth}``."""
    from hydra.utils import instantiate

    entry = dict(entry)
    target = entry.get("_target_")
    if not isinstance(target, str) or not target:
        raise UserError(f"{where}: a model given as a mapping needs _target_ (e.g. {{_target_:mypkg.nets.build}}).")
    name = str(entry.pop("name", None) or target.rsplit(".", 1)[-1])
    checkpoint = entry.pop("weights", None)
    path = None
    if checkpoint is not None:
        path = Path(str(checkpoint)).expanduser()
        if path.is_dir():
            raise UserError(f"{where}.weights: {str(path)!r} is a folder; give the checkpoint file in it.")
        if not path.is_file():
            raise UserError(f"{where}.weights: checkpoint file {str(path)!r} does not exist.")
    transform = preprocess_from(entry.pop("preprocess", None), where).transform()
    label = f"checkpoint {path.name}" if path else f"as built by {target}"

    def build() -> nn.Module:
        try:
            module = instantiate(entry)
        except Exception as exc:  # noqa: BLE001 - the user's target: report it in one line
            cause = exc.__cause__ or exc
            raise UserError(f"{where}: {target} could not be built ({type(cause).__name__}: {cause}).") from None
        if not isinstance(module, nn.Module):
            raise UserError(f"{where}: {target} returned {type(module).__name__}, not an nn.Module.")
        return module

    return CustomModel(name, build, label, path.resolve() if path else None, transform)


def from_module(module: nn.Module, name: str, transform: Callable | None = None) -> CustomModel:
    """A CustomModel for a module handed over in memory (the Python API): used as it is."""
    return CustomModel(name, lambda: module, "the module as given", None, transform or Preprocess().transform(), True)
