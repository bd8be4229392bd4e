"""The shared pass: one forward per image batch that serves every requested layer and every method.

Two kinds, picked from what the batch's methods need:

- ``stream``: no gradients needed. The forward runs in inference mode and each layer's output is handed to
  the methods while the forward is still running (then dropped), so memory stays flat however many layers.
- ``GraphSession``: gradients needed. The forward runs once with autograd and the backward rules of
  ``methods._rules`` attached; its captured layers and logits then serve any number of batched backwards.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pipeline.methods._rules import PLAIN, RuleBox, backward_rules
from pipeline.methods.base import ModelInfo, Noise
from pipeline.models.capture import run_capturing
from pipeline.models.layers import ConvLayer
from pipeline.status import raise_if_stopped

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
        self.model, self.strategy = model, strategy
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

    def layer_grads(self, grad_outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One backward of ``grad_outputs`` (shaped like the logits) under the plain gradient rule, returning the
        gradient at every captured layer still held (zeros for a layer the logits do not depend on)."""
        names = list(self.activations)
        self.box.rule = PLAIN
        found = torch.autograd.grad(
            self.logits, [self.activations[n] for n in names], grad_outputs, retain_graph=True, allow_unused=True
        )
        return {
            n: torch.zeros_like(self.activations[n]) if g is None else g.detach()
            for n, g in zip(names, found, strict=True)
        }

    def release(self, layer: str) -> None:
        """Forget a layer's activation once its methods are done."""
        self.activations.pop(layer, None)

    def __enter__(self) -> GraphSession:
        return self

    def __exit__(self, *exc) -> None:
        self.activations.clear()
        self.logits = None


def one_hot(classes: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """grad_outputs [*classes.shape, C] selecting logit ``classes[..., i]`` of image i, for logits ``like`` [N, C]."""
    out = torch.zeros((*classes.shape, like.shape[-1]), dtype=like.dtype, device=like.device)
    return out.scatter_(-1, classes.to(like.device).unsqueeze(-1), 1.0)


def noise_for(x: torch.Tensor, labels: list[str], seed: int, noise: Noise) -> torch.Tensor:
    """SmoothGrad noise [samples, N, 3, H, W]: each image's own draws, seeded by ``seed`` and its label, so an
    image gets the same noise in any batch and on any device; σ is ``noise.sigma`` × that image's value range."""
    draws = []
    for image, label in zip(x, labels, strict=True):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(label.encode()))
        scale = noise.sigma * float(image.max() - image.min())
        draws.append(torch.randn((noise.samples, *image.shape), generator=generator) * scale)
    return torch.stack(draws, 1).to(x.device, x.dtype)


@dataclass
class Batch:
    """The methods' view of one shared pass (``methods.base.BatchView``); backward results are cached per batch."""

    model: ModelInfo
    x: torch.Tensor
    sources: list[np.ndarray]
    labels: list[str]
    logits: torch.Tensor | None = None
    session: GraphSession | None = field(default=None, repr=False)
    seed: int = 0
    layers: list[ConvLayer] = field(default_factory=list)
    scratch: dict = field(default_factory=dict, repr=False)
    cache: dict = field(default_factory=dict, repr=False)
    methods: list = field(default_factory=list, repr=False)
    explain: torch.Tensor | None = None
    chunk: int = 32
    module: nn.Module | None = field(default=None, repr=False)
    runner: Callable | None = field(default=None, repr=False)  # BatchWork's rerun, bound to this pass
    indices: list[int] = field(default_factory=list)  # each image's index in the run's full image list

    def __post_init__(self) -> None:
        if not self.indices:  # a batch on its own (the Python API, tests): its images are 0, 1, 2 ...
            self.indices = list(range(len(self.sources)))
        if len(self.indices) != len(self.sources):
            raise ValueError(f"{len(self.indices)} image indices for a batch of {len(self.sources)} images")

    def logits_of(self, inputs: torch.Tensor) -> torch.Tensor:
        raise_if_stopped()  # a place a long scoring loop stops at
        with torch.inference_mode():
            return self.module(inputs.to(self.x.device, self.x.dtype))

    def rerun(self, methods: list, layers: list[ConvLayer], edit: Callable | None = None) -> Iterator:
        if self.runner is None:
            raise RuntimeError("this pass cannot run methods again")
        return self.runner(self, methods, layers, edit)

    def _session(self) -> GraphSession:
        if self.session is None:
            raise RuntimeError("this pass keeps no graph: the method must declare needs.gradients")
        return self.session

    def input_grads(self, rule: str, output: torch.Tensor, grad_outputs: torch.Tensor) -> torch.Tensor:
        return self._session().input_grads(rule, output, grad_outputs)

    def class_input_grads(self, rule: str, classes: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        smooth = noise if noise is not None and noise.active else None
        key = ("input", rule, tuple(map(tuple, classes.tolist())), smooth)
        if key not in self.cache:
            if self.logits is None:
                raise RuntimeError("class targets need the logits: the method must declare needs.logits")
            grad_outputs = one_hot(classes, self.logits)
            if smooth is None:
                self.cache[key] = self._session().input_grads(rule, self.logits, grad_outputs)
            else:
                self.cache[key] = self.smoothed(rule, None, grad_outputs, smooth)
        return self.cache[key]

    def class_layer_grads(self, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        key = ("layers", tuple(classes.tolist()))
        if key not in self.cache:
            self.cache[key] = self._session().layer_grads(one_hot(classes, self.logits))
        return self.cache[key]

    def smoothed(self, rule: str, layer: str | None, grad_outputs: torch.Tensor, noise: Noise) -> torch.Tensor:
        """The mean over ``noise.samples`` noisy copies of the input of the signal ``grad_outputs`` sends back
        from ``layer`` (None: the logits) under ``rule``; each copy is one more forward, batched over the images."""
        session = self._session()
        total = None
        for noisy in noise_for(self.x, self.labels, self.seed, noise):
            names = [layer] if layer is not None else []
            with GraphSession(session.model, self.x + noisy, names, layer is None, session.strategy) as copy:
                output = copy.activations[layer] if layer is not None else copy.logits
                grads = copy.input_grads(rule, output, grad_outputs)
            total = grads if total is None else total + grads
        return total / noise.samples

    def release(self, layer: str) -> None:
        """Drop what the pass holds for ``layer`` once every method is done with it."""
        if self.session is not None:
            self.session.release(layer)
        for value in self.cache.values():
            if isinstance(value, dict):
                value.pop(layer, None)


@dataclass
class Layer(Batch):
    """The shared pass seen at one requested layer (``methods.base.LayerView``)."""

    layer: ConvLayer | None = None
    activation: torch.Tensor | None = None
    outputs: dict = field(default_factory=dict, repr=False)

    def layer_input_grads(self, rule: str, grad_outputs: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        if noise is not None and noise.active:
            return self.smoothed(rule, self.layer.name, grad_outputs, noise)
        return self.input_grads(rule, self.activation, grad_outputs)


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
