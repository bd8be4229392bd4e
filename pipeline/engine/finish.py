"""What a gathering method is handed once per model, after the image batches: the gathered states, the layers
still to make, the conv weights and a differentiable truncated forward (``methods.base.FinishView``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.methods.base import ModelInfo
from pipeline.models.capture import run_capturing
from pipeline.models.layers import ConvLayer


def input_side(transform: object, default: int = 224) -> int:
    """The side of a model's preprocessed input, from its transform's ``crop_size`` (``default`` when it has none)."""
    crop = getattr(transform, "crop_size", None)
    if isinstance(crop, (list, tuple)) and crop:
        return int(crop[0])
    return int(crop) if isinstance(crop, int) else default


@dataclass
class Finish:
    """One gathering method's view of a model once its batches are done."""

    module: nn.Module
    model: ModelInfo
    layers: list[ConvLayer]
    states: dict[str, dict]
    seed: int = 0
    input_size: int = 224
    on_advance: Callable[[int], None] = field(default=lambda units: None, repr=False)
    # the source picture of a global image index (HxWx3 uint8, as ``view.sources`` had it), and its label
    load_image: Callable[[int], np.ndarray] | None = field(default=None, repr=False)
    label_of: Callable[[int], str] | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.module.parameters()), torch.device("cpu"))

    def weight(self, layer: str) -> torch.Tensor:
        return dict(self.module.named_modules())[layer].weight.detach()

    def features(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Each named conv's output for ``x``, cloned as the conv made it (a following in-place activation
        changes only the original), with the graph to ``x`` kept; the forward stops after the deepest."""
        found: dict[str, torch.Tensor] = {}
        with torch.enable_grad():
            run_capturing(self.module, x, list(dict.fromkeys(layers)), lambda n, out: found.__setitem__(n, out.clone()))
        return found

    def image(self, index: int) -> np.ndarray:
        """The run's image ``index`` (its place in the full image list) as the methods saw it in ``view.sources``."""
        if self.load_image is None:
            raise RuntimeError("this finish has no image loader: the run's images cannot be read again")
        return self.load_image(int(index))

    def label(self, index: int) -> str:
        """The short name of the run's image ``index`` (its file-name label; ``#index`` when unknown)."""
        return self.label_of(int(index)) if self.label_of is not None else f"#{int(index)}"

    def advance(self, units: int) -> None:
        self.on_advance(units)
