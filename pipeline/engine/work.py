"""The order of work for one model and one image batch, with no files: which pass to run, which method sees what.

Methods are called through the interface of ``methods.base`` only; nothing here knows a method by name.
Each method's outputs go to ``emit`` as soon as they exist; a method that raises goes to ``fail`` (its
artefacts for this layer and batch), and the others carry on.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.engine.finish import Finish, input_side
from pipeline.engine.shared import Batch, GraphSession, at_layer, stream
from pipeline.methods.base import Method, ModelInfo, Needs, Output, Scope
from pipeline.models.layers import ConvLayer
from pipeline.models.receptive import receptive_fields
from pipeline.status import raise_if_stopped

Emit = Callable[[Method, list[Output]], None]
Fail = Callable[[Method, "str | None", BaseException], None]


def needs_of(methods: list[Method]) -> Needs:
    return functools.reduce(operator.or_, (m.needs for m in methods), Needs())


@dataclass
class BatchWork:
    """One image batch of one model: the methods that see images, and where their results go."""

    module: torch.nn.Module
    layers: list[ConvLayer]
    methods: list[Method]
    emit: Emit
    fail: Fail
    want_logits: bool = False
    strategy: str = "loop"
    states: dict[str, dict[str, dict]] = field(default_factory=dict)  # gathering method -> layer -> its state
    finished: dict[str, dict[str, Output]] = field(default_factory=dict)  # gathering method -> layer -> its output

    def run(self, batch: Batch) -> torch.Tensor | None:
        """Run the one shared forward for ``batch`` and every method on it; return the logits (or None)."""
        ordered = sorted(self.methods, key=lambda m: m.reads_outputs)  # readers of other outputs go last
        layer_methods = [m for m in ordered if m.needs.activations]
        image_methods = [m for m in ordered if m.scope is Scope.IMAGE]
        needs = needs_of(self.methods)
        layers = with_fields(self.module, self.layers, batch.x) if layer_methods else []
        batch.layers, batch.methods, batch.module = list(layers), list(self.methods), self.module
        batch.runner = self._rerun
        full = needs.logits or self.want_logits
        if needs.gradients:
            with GraphSession(self.module, batch.x, [layer.name for layer in layers], full, self.strategy) as session:
                batch.logits, batch.session = session.logits, session
                if batch.logits is not None and len(batch.model.categories) != batch.logits.shape[-1]:
                    batch.model = dataclasses.replace(batch.model, categories=())  # not ImageNet's classes
                try:
                    for layer in layers:
                        self._layer(batch, layer, session.activations[layer.name], layer_methods)
                        batch.release(layer.name)
                    self._image(batch, image_methods)
                finally:
                    batch.session = None
                    batch.cache.clear()
            return batch.logits
        batch.logits = stream(
            self.module, batch.x, layers, lambda layer, out: self._layer(batch, layer, out, layer_methods), full
        )
        self._image(batch, image_methods)
        return batch.logits

    def _rerun(
        self, batch: Batch, methods: list[Method], layers: list[ConvLayer], edit: Callable | None
    ) -> Iterator[tuple[str, list[tuple[Method, Output]]]]:
        """``BatchView.rerun``: the original pass's outputs are made once per batch and shared by every caller."""
        if batch.logits is None:
            raise RuntimeError("running methods again needs the logits: the method must declare needs.logits")
        classes = batch.logits.detach().argmax(1)
        if edit is None:
            key = ("rerun", tuple((m.name, m.params) for m in methods), tuple(layer.name for layer in layers))
            if key not in batch.cache:
                batch.cache[key] = self._run_on(self.module, batch, methods, layers, classes)
            yield "original", batch.cache[key]
            return
        changed = copy.deepcopy(self.module)  # the one copy; the model itself is never touched
        try:
            for label in edit(changed):
                raise_if_stopped()
                yield label, self._run_on(changed, batch, methods, layers, classes)
        finally:
            del changed

    def _run_on(
        self, module: torch.nn.Module, batch: Batch, methods: list[Method], layers: list[ConvLayer], classes
    ) -> list[tuple[Method, Output]]:
        made: list[tuple[Method, Output]] = []

        def fail(method: Method, layer: str | None, exc: BaseException) -> None:
            raise exc

        def emit(method: Method, outputs: list[Output]) -> None:
            made.extend((method, output) for output in outputs)

        fresh = Batch(
            batch.model, batch.x, batch.sources, batch.labels, seed=batch.seed, chunk=batch.chunk, indices=batch.indices
        )
        fresh.explain = classes
        BatchWork(module, layers, methods, emit, fail, strategy=self.strategy).run(fresh)
        return made

    def _layer(self, batch: Batch, layer: ConvLayer, activation: torch.Tensor, methods: list[Method]) -> None:
        view = at_layer(batch, layer, activation)
        for name, made in self.finished.items():  # gathering methods that finished before this pass
            if layer.name in made:
                view.outputs[name] = [made[layer.name]]
        for method in methods:
            if method.gathers:
                self._gather(method, view)
            else:
                view.outputs[method.name] = self._call(method, layer.name, lambda m=method: m.for_layer_batch(view))

    def _gather(self, method: Method, view) -> None:
        """Fold this batch into a gathering method's state at this layer; a failure fails that layer's artefact."""
        states = self.states.get(method.name, {})
        if view.layer.name not in states:
            return
        try:
            method.gather(view, states[view.layer.name])
        except Exception as exc:  # noqa: BLE001 - one method failing here fails only its own artefact
            del states[view.layer.name]
            self.fail(method, view.layer.name, exc)

    def _image(self, batch: Batch, methods: list[Method]) -> None:
        for method in methods:
            self._call(method, None, lambda m=method: m.for_batch(batch))

    def _call(self, method: Method, layer: str | None, produce: Callable[[], list[Output]]) -> list[Output]:
        try:
            outputs = produce()
        except Exception as exc:  # noqa: BLE001 - one method failing here fails only its own artefacts
            # a per-image method that fails while gathering a layer fails its own (per-image) artefacts
            self.fail(method, layer if method.scope is Scope.LAYER_IMAGE else None, exc)
            return []
        self.emit(method, outputs)
        return outputs


def with_fields(module: torch.nn.Module, layers: list[ConvLayer], x: torch.Tensor | tuple[int, int]) -> list[ConvLayer]:
    """The layers with their receptive fields for inputs the size of ``x`` (or of that (H, W); traced once per
    model and size)."""
    size = tuple(x) if isinstance(x, tuple) else tuple(x.shape[-2:])
    fields = receptive_fields(module, (int(size[0]), int(size[1])))
    return [dataclasses.replace(layer, receptive=fields.get(layer.name)) for layer in layers]


def layer_outputs(method: Method, module: torch.nn.Module, layers: list[ConvLayer], emit: Emit, fail: Fail) -> None:
    """A per-layer method (scope LAYER, e.g. filters) over every layer's weight: no image, no forward pass."""
    modules = dict(module.named_modules())
    for layer in layers:
        try:
            output = method.for_layer(layer, modules[layer.name].weight)
        except Exception as exc:  # noqa: BLE001
            fail(method, layer.name, exc)
            continue
        emit(method, [output])


def run_methods(
    module: torch.nn.Module,
    x: torch.Tensor,
    layers: list[ConvLayer],
    methods: list[Method],
    info: ModelInfo,
    sources: list | None = None,
    labels: list[str] | None = None,
    strategy: str = "loop",
    seed: int = 0,
) -> list[tuple[Method, Output]]:
    """Every method on one batch ``x`` of ``module``, in memory: (method, output) pairs in the order made.

    The same shared pass and order of work as a sweep, minus files; the first failure is raised."""
    made: list[tuple[Method, Output]] = []

    def fail(method: Method, layer: str | None, exc: BaseException) -> None:
        raise exc

    def emit(method: Method, outputs: list[Output]) -> None:
        made.extend((method, output) for output in outputs)

    for method in methods:
        if method.scope is Scope.LAYER and not method.gathers:
            layer_outputs(method, module, layers, emit, fail)
    gatherers = [m for m in methods if m.scope is Scope.LAYER and m.gathers]
    states = {m.name: {layer.name: {} for layer in layers} for m in gatherers}
    image_methods = [m for m in methods if m.scope is not Scope.LAYER]
    n = x.shape[0]
    blank = np.zeros((*x.shape[-2:], 3), dtype=np.uint8)
    sources, labels = sources or [blank] * n, labels or [str(i) for i in range(n)]

    def batch() -> Batch:
        return Batch(info, x, sources, labels, seed=seed)

    def finish(method: Method) -> dict[str, Output]:
        finish_layers = with_fields(module, [layer for layer in layers if layer.name in states[method.name]], x)
        side = input_side(None, x.shape[-1])
        view = Finish(module, info, finish_layers, states[method.name], seed, side, load_image=sources.__getitem__)
        view.label_of = labels.__getitem__
        outputs = method.finish(view)
        emit(method, outputs)
        return {output.layer: output for output in outputs if output.layer}

    # as a sweep: readers of other outputs see the gathering methods' finished outputs, so those gather first
    first = bool(gatherers) and any(m.reads_outputs for m in image_methods)
    finished: dict[str, dict[str, Output]] = {}
    if first:
        BatchWork(module, layers, gatherers, emit, fail, strategy=strategy, states=states).run(batch())
    for method in gatherers if first else []:
        finished[method.name] = finish(method)
    if image_methods or (gatherers and not first):
        work = image_methods + ([] if first else gatherers)
        BatchWork(module, layers, work, emit, fail, strategy=strategy, states=states, finished=finished).run(batch())
    for method in [] if first else gatherers:
        finish(method)
    return made
