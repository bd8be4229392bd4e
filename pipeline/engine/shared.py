"""The shared pass: one forward per image batch that serves every requested layer and every method.

Two kinds, picked from what the batch's methods need:

- ``stream``: no gradients needed. The forward runs in inference mode and each layer's output is handed to
  the methods while the forward is still running (then dropped), so memory stays flat however many layers.
- ``GraphSession``: gradients needed. The forward runs once with autograd and the backward rules of
  ``methods._rules`` attached; its captured layers and logits then serve any number of batched backwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.methods._rules import RuleBox, backward_rules
from pipeline.methods.base import ModelInfo
from pipeline.models.capture import run_capturing
from pipeline.models.layers import ConvLayer

# How the k targets of one backward request run: ``loop`` makes k backward calls, each batched over the images;
# ``vmap`` makes one ``is_grads_batched`` call (measured slower on CPU; see the README).
STRATEGIES = ("loop", "vmap")


class GraphSession:
    """One forward pass with gradients whose captured layers and logits serve any number of batched backwards.

    Use as a context manager; leaving it drops the graph. ``activations`` (graph attached) and ``logits``
    (None when the forward stopped at the deepest layer) may be read directly.
    """

    def __init__(
        self, model: nn.Module, x: torch.Tensor, layers: list[str], full: bool = False, strategy: str = "loop"
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"backward strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self.box = RuleBox()
        self.x = x.detach().requires_grad_(True)
        self.activations: dict[str, torch.Tensor] = {}
        with torch.enable_grad(), backward_rules(self.box):
            self.logits = run_capturing(model, self.x, list(dict.fromkeys(layers)), self.activations.__setitem__, full)

    def input_grads(self, rule: str, output: torch.Tensor, grad_outputs: torch.Tensor) -> torch.Tensor:
        """Backward ``grad_outputs`` [k, *output.shape] from ``output`` to the input under ``rule``: [k, N, 3, H, W]."""
        self.box.rule = rule
        if self.strategy == "vmap":
            (grads,) = torch.autograd.grad(output, self.x, grad_outputs, retain_graph=True, is_grads_batched=True)
            return grads.detach()
        return torch.stack([torch.autograd.grad(output, self.x, g, retain_graph=True)[0] for g in grad_outputs])

    def release(self, layer: str) -> None:
        """Forget a layer's activation once its methods are done."""
        self.activations.pop(layer, None)

    def __enter__(self) -> GraphSession:
        return self

    def __exit__(self, *exc) -> None:
        self.activations.clear()
        self.logits = None


@dataclass
class Batch:
    """The methods' view of one shared pass (``methods.base.BatchView``)."""

    model: ModelInfo
    x: torch.Tensor
    sources: list[np.ndarray]
    labels: list[str]
    logits: torch.Tensor | None = None
    session: GraphSession | None = field(default=None, repr=False)

    def input_grads(self, rule: str, output: torch.Tensor, grad_outputs: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            raise RuntimeError("this pass keeps no graph: the method must declare needs.gradients")
        return self.session.input_grads(rule, output, grad_outputs)


@dataclass
class Layer(Batch):
    """The shared pass seen at one requested layer (``methods.base.LayerView``)."""

    layer: ConvLayer | None = None
    activation: torch.Tensor | None = None


def at_layer(batch: Batch, layer: ConvLayer, activation: torch.Tensor) -> Layer:
    return Layer(**{k: getattr(batch, k) for k in Batch.__dataclass_fields__}, layer=layer, activation=activation)


def stream(
    model: nn.Module,
    x: torch.Tensor,
    layers: list[ConvLayer],
    on_layer: Callable[[ConvLayer, torch.Tensor], None],
    full: bool,
) -> torch.Tensor | None:
    """Inference-mode forward calling ``on_layer`` as each layer runs (its output is only valid during the call);
    returns the logits when ``full``, else stops after the deepest layer."""
    by_name = {layer.name: layer for layer in layers}
    with torch.inference_mode():
        return run_capturing(model, x, list(by_name), lambda name, out: on_layer(by_name[name], out), full)
