"""What a gathering method is handed once per model, after the image batches: the gathered states, the layers
still to make, the conv weights and a differentiable truncated forward (``methods.base.FinishView``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.engine import optforward
from pipeline.methods.base import ModelInfo
from pipeline.models.capture import run_capturing
from pipeline.models.layers import ConvLayer

log = logging.getLogger(__name__)


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
    # inputs per differentiable forward of the model within memory_budget, estimated when asked (None: no bound)
    limit_batch: Callable[[], int | None] = field(default=lambda: None, repr=False)
    _copy: tuple[frozenset[str], nn.Module] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next((p.device for p in self.module.parameters()), torch.device("cpu"))

    @property
    def batch_limit(self) -> int | None:
        """Inputs per differentiable forward of the model within memory_budget (None: no bound known)."""
        return self.limit_batch()

    def weight(self, layer: str) -> torch.Tensor:
        return dict(self.module.named_modules())[layer].weight.detach()

    def features(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        """Each named conv's output for ``x``, cloned as the conv made it (a following in-place activation
        changes only the original), with the graph to ``x`` kept; the forward stops after the deepest. It runs on
        a frozen copy of the model made for input gradients (``engine.optforward``), built once per view."""
        names = list(dict.fromkeys(layers))
        net = self._optimising_copy(names)
        if net is not self.module and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        found: dict[str, torch.Tensor] = {}
        with torch.enable_grad():
            run_capturing(net, x, names, lambda n, out: found.__setitem__(n, out.clone()))
        return found

    def image(self, index: int) -> np.ndarray:
        """The run's image ``index`` (its place in the full image list) as the methods saw it in ``view.sources``."""
        if self.load_image is None:
            raise RuntimeError("this finish has no image loader: the run's images cannot be read again")
        return self.load_image(int(index))

    def label(self, index: int) -> str:
        """The short name of the run's image ``index`` (its file-name label; ``#index`` when unknown)."""
        return self.label_of(int(index)) if self.label_of is not None else f"#{int(index)}"

    def _optimising_copy(self, names: list[str]) -> nn.Module:
        """The copy that keeps every layer of this view (and ``names``) unfolded; the model itself when it cannot
        be copied."""
        if self._copy is None or not self._copy[0].issuperset(names):
            read = frozenset({layer.name for layer in self.layers} | set(names))
            cpu = self.device.type == "cpu"
            try:
                net = optforward.replica(self.module, set(read), channels_last=cpu)
            except Exception as exc:  # noqa: BLE001 - an uncopyable model still runs, only slower
                log.debug("no optimising copy of the model (%s); running the model itself", exc)
                net = self.module
            if cpu:
                optforward.keep_freed_memory()
            self._copy = (read, net)
        return self._copy[1]

    def advance(self, units: int) -> None:
        self.on_advance(units)
