"""One model's share of a sweep: what is left to make, its batches, and how outputs become records and files.

Batches always hold the same images (plan order, ``batch_size`` at a time), so an artefact redone after an
interruption has the same bytes as in an uninterrupted run; a batch whose artefacts are all verified on disk is
not run at all, and one with some left runs whole but writes only what is missing.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Settings
from pipeline.engine.artefacts import Drawing, make_record, model_info, out_of_memory, png_path
from pipeline.engine.finish import Finish, input_side
from pipeline.engine.inputs import fit_input
from pipeline.engine.memory import OPTIMISING_MOST, auto_batch, inference_chunk, optimising_batch
from pipeline.engine.partials import partial_path, save_state
from pipeline.engine.progress import FORWARD, PICTURE, Progress, compute_cost
from pipeline.engine.shared import Batch
from pipeline.engine.work import BatchWork, layer_outputs, needs_of, with_fields
from pipeline.images import ImageReadError, prepare
from pipeline.methods.base import Method, Output, Scope
from pipeline.models.registry import LoadedModel
from pipeline.output.record import Record
from pipeline.output.writer import Writer, error_text
from pipeline.plan import ArtefactKey, ModelPlan, Plan
from pipeline.render.figures import header_lines, input_tile
from pipeline.status import raise_if_stopped

log = logging.getLogger("pipeline.engine")


@dataclass
class ModelRun:
    """One model's share of a run: turns method outputs into records and files, and failures into records."""

    settings: Settings
    plan: Plan
    mp: ModelPlan
    writer: Writer | None = None
    progress: Progress | None = None
    predicted: dict = field(default_factory=dict)  # the run's top-5 table: model -> image label -> top-5
    verified: frozenset[ArtefactKey] = frozenset()
    known_predictions: dict = field(default_factory=dict)  # image label -> top-5, from an earlier run
    told: set = field(default_factory=set)  # images whose problems were already said (shared by the models)
    after_batch: Callable[[], None] | None = None  # e.g. rewrite run.json, so predictions survive a kill
    done: set[ArtefactKey] = field(default_factory=set)
    loaded: LoadedModel | None = None  # held while this model works, released after (a sweep keeps every ModelRun)
    transform_input: bool | None = None  # googlenet / inception_v3: how the loaded model transforms its input
    batch_size: int | None = None  # images per pass (decided here when batch_size is auto)
    chunk: int | None = None  # inputs per inference forward for methods that read others' outputs
    input_hw: tuple[int, int] | None = None  # the (H, W) the model's batches were fed (receptive fields at finish)
    partials: Path | None = None  # a shard's job folder: gatherers save their states there (engine.partials)

    def __post_init__(self) -> None:
        self.methods = {m.name: m for m in self.plan.methods}
        self.index = self.plan.index()  # image -> global index (its place before any shard)
        self.layer_todo = {
            m.name: [layer for layer in self.mp.layers if self._key(m, layer.name, None) not in self.verified]
            for m in self.plan.methods
            if m.scope is Scope.LAYER
        }
        if not self.plan.per_layer:  # another shard makes them
            self.layer_todo = {name: [] for name in self.layer_todo}
        if self.plan.shard is not None and self.partials is not None:  # every shard gathers: layers not saved yet
            for m in self.plan.gatherers():
                saved = [layer for layer in self.mp.layers if partial_path(self.partials, m.name, layer.name).is_file()]
                self.layer_todo[m.name] = [layer for layer in self.mp.layers if layer not in saved]
        # A per-image method that reads others' outputs (e.g. a depth overview) and is still to make sees the
        # gathering methods' finished outputs: they gather in a forward-only pass over every batch and finish
        # first, then the per-image pass runs. On a rerun they are made again for it (in memory; what is on
        # disk is not rewritten), so a remade reader is the same as the first one.
        readers = self._readers_pending() and self.plan.per_layer and self.plan.shard is None
        self.finish_layers = {
            m.name: list(self.mp.layers) if readers else self.layer_todo[m.name] for m in self.plan.gatherers()
        }
        # gathering methods with layers left to make: every batch runs again so that they see every image
        self.gathering = [m for m in self.plan.gatherers() if self.finish_layers[m.name]]
        self.states = {m.name: {layer.name: {} for layer in self.finish_layers[m.name]} for m in self.gathering}
        self.finished: dict[str, dict[str, Output]] = {}  # gathering method -> layer -> its finished output
        self.gather_first = bool(self.gathering) and readers
        chunks = self._chunks()
        self.gather_batches = chunks if self.gather_first else []
        self.batches = [chunk for chunk in chunks if not self._batch_done(chunk)]

    # --- what is left to do ---------------------------------------------------------------------------------------
    def _key(self, method: Method, layer: str | None, image: Path | None) -> ArtefactKey:
        return ArtefactKey(self.mp.name, method.name, layer, image)

    def _chunks(self) -> list[list[Path]]:
        """The image batches, in plan order: the same composition on every run, so redone artefacts match."""
        if not (self.plan.image_methods() or self.settings.predictions or self.gathering):
            return []
        images, size = self.plan.images, self.settings.batch_size
        if size == "auto":
            keeps_graph = needs_of(self.plan.image_methods() + self.gathering).gradients
            budget, device = self.settings.memory_budget, self.settings.device
            size = auto_batch(self.mp, budget, device, keeps_graph, len(images))
        self.batch_size = size
        return [images[start : start + size] for start in range(0, len(images), size)]

    def _readers_pending(self) -> bool:
        readers = {m.name for m in self.plan.image_methods() if m.reads_outputs}
        return any(k.method in readers and k not in self.verified for k in self.plan.artefacts(self.mp))

    def _batch_done(self, images: list[Path]) -> bool:
        if self.gathering and not self.gather_first:
            return False
        if any(key not in self.verified for key in self.plan.artefacts(self.mp, images)):
            return False
        return not self.settings.predictions or all(self.plan.labels[i] in self.known_predictions for i in images)

    def use_states(self, states: dict[str, dict[str, dict]]) -> None:
        """Gathered states made elsewhere (the merged partials of a sharded run's jobs) stand for every image batch:
        only the gathering methods' finish is left to do."""
        self.batches = []
        self.states = states

    def needs_load(self) -> bool:
        return bool(self.batches) or any(self.layer_todo.values())

    def cost(self) -> float:
        """The planned work of this model in progress units (see ``engine.progress``)."""
        pictures = {name: layers for name, layers in self.layer_todo.items()}
        if self.plan.shard is not None:  # a shard's gatherers save partial states, no picture (engine.shards)
            pictures = {name: layers for name, layers in pictures.items() if not self.methods[name].gathers}
        total = PICTURE * sum(len(layers) for layers in pictures.values())
        for method in self.gathering:
            todo = len(self.finish_layers[method.name])
            total += compute_cost(method) * todo + (method.finish_cost(todo) if self.plan.shard is None else 0)
        total += FORWARD * sum(len(images) for images in self.gather_batches)
        for images in self.batches:
            total += FORWARD * len(images)
            keys = list(self.plan.artefacts(self.mp, images))
            if any(key not in self.verified for key in keys):  # else the batch runs for its predictions only
                total += sum(compute_cost(self.methods[k.method]) + (k not in self.verified) * PICTURE for k in keys)
        return total

    # --- records and files ----------------------------------------------------------------------------------------
    def record(self, method: Method, layer: str | None, image: Path | None, output: Output | None = None) -> Record:
        record = make_record(self.plan, self.mp, method, layer, image)
        if output is not None:
            record.params.update(output.params)
            record.extra = output.fields
        return record

    def header(self, method: Method, output: Output, image: Path | None) -> list[str]:
        layer = next((item for item in self.mp.layers if item.name == output.layer), None)
        where = output.picture.where or (f"layer {layer.name} ({layer.describe()})" if layer else "")
        label = self.mp.weights.label
        weights = label.upper() if self.mp.weights.random else label
        if self.transform_input is not None:  # googlenet / inception_v3: say how the input was transformed
            weights += f" (transform_input={self.transform_input})"
        return header_lines(
            self.mp.name,
            method.name,
            where,
            weights,
            None if image is None else self.plan.name(image),
            output.picture.header,
        )

    def emit(self, images: list[Path], method: Method, outputs: list[Output]) -> None:
        """Queue the pictures of fresh outputs; an output whose artefact is already verified is dropped.

        Called after each method's work on a layer (or per image batch): the place a stop signal takes effect."""
        raise_if_stopped()
        font_px = self.settings.font_px
        for output in outputs:
            image = None if output.image is None else images[output.image]
            key = self._key(method, output.layer, image)
            self.progress.advance(compute_cost(method))
            if key in self.done:
                continue
            self.done.add(key)
            if key in self.verified:
                continue
            drawing = Drawing(output, self.header(method, output, image), font_px)
            path = png_path(self.plan, self.mp, method, output.layer, image)
            self.writer.submit(self.record(method, output.layer, image, output), path, drawing)

    def fail_keys(self, keys, error: str, credit: bool = True) -> None:
        """Record the artefacts of ``keys`` not yet made or verified as failed, with ``error``."""
        for key in keys:
            if key in self.done or key in self.verified:
                continue
            self.done.add(key)
            method = self.methods[key.method]
            if credit:
                self.progress.advance(compute_cost(method))
            self.writer.fail(self.record(method, key.layer, key.image), error)

    def fail_method(self, images: list[Path], method: Method, layer: str | None, exc: BaseException) -> None:
        error = error_text(exc)
        log.error("%s %s %s failed: %s", self.mp.name, method.name, layer or "", error)
        if method.scope is Scope.LAYER:
            keys = [self._key(method, layer, None)]
        else:
            keys = [self._key(method, layer, image) for image in images]
        self.fail_keys(keys, error)

    # --- the work -------------------------------------------------------------------------------------------------
    def run(self, pending: Future[LoadedModel]) -> None:
        """Load (or take the model loaded ahead), make every artefact left to make, then let the model go."""
        try:
            self._run(pending)
        finally:
            self.loaded = None

    def _run(self, pending: Future[LoadedModel]) -> None:
        started = time.perf_counter()
        try:
            self.loaded = pending.result()
            self.transform_input = getattr(self.loaded.module, "transform_input", None)
            raise_if_stopped()
        except Exception as exc:  # noqa: BLE001 - one model failing must not sink the sweep
            error = error_text(exc)
            log.error("%s failed: %s", self.mp.name, error)
            fresh = sum(1 for key in self.plan.artefacts(self.mp) if key not in self.verified)
            self.fail_keys(self.plan.artefacts(self.mp), error, credit=False)
            self.progress.advance(self.cost() - PICTURE * fresh)  # the pictures are credited as they are recorded
            return
        log.info(
            "%s: %d conv layers, weights %s, ready after %.1fs",
            self.mp.name,
            len(self.mp.layers),
            self.mp.weights.label,
            time.perf_counter() - started,
        )
        module = self.loaded.module
        for method in self.plan.methods:
            if method.scope is Scope.LAYER and not method.gathers:
                layer_outputs(
                    method,
                    module,
                    self.layer_todo[method.name],
                    lambda m, outs: self.emit([], m, outs),
                    lambda m, layer, exc: self.fail_method([], m, layer, exc),
                )
        if self.gather_first:
            for images in self.gather_batches:
                self.batch(images, gather_only=True)
            for method in self.gathering:
                self.finish(method)
        for images in self.batches:
            self.batch(images)
        if not self.gather_first:
            for method in self.gathering:
                self.finish(method)

    def finish(self, method: Method) -> None:
        """A gathering method's artefacts, once every batch has been folded into its states."""
        states = self.states[method.name]
        layers = [layer for layer in self.finish_layers[method.name] if layer.name in states]  # not failed gathering
        if not layers:
            return
        raise_if_stopped()
        if self.plan.shard is not None:  # a shard saves its states; the merge step finishes (engine.shards)
            self.save_partials(method, [layer.name for layer in layers])
            return

        def advance(units: int) -> None:
            self.progress.advance(units)
            raise_if_stopped()

        info = model_info(self.loaded, self.mp)
        side = input_side(self.loaded.transform)
        layers = with_fields(self.loaded.module, layers, self.input_hw or (side, side))
        view = Finish(
            self.loaded.module,
            info,
            layers,
            states,
            self.settings.seed,
            side,
            advance,
            load_image=self.source,
            label_of=self.label,
            limit_batch=self._optimising_batch,
        )
        try:
            outputs = method.finish(view)
        except Exception as exc:  # noqa: BLE001 - a failing method fails only its own artefacts
            error = error_text(exc)
            log.error("%s %s failed: %s", self.mp.name, method.name, error)
            self.fail_keys([self._key(method, layer.name, None) for layer in layers], error)
            return
        self.finished[method.name] = {output.layer: output for output in outputs if output.layer}
        self.emit([], method, outputs)

    def _optimising_batch(self) -> int:
        """The bound memory_budget puts on a batch of inputs a method optimises (estimated when one asks)."""
        return optimising_batch(self.mp, self.settings.memory_budget, self.settings.device, OPTIMISING_MOST)

    def source(self, index: int) -> np.ndarray:
        """The run's image of global ``index`` read again, as a batch's ``sources`` showed it (uint8 [H, W, 3])."""
        image = (self.plan.all_images or self.plan.images)[index]
        tensor, _ = prepare(image, self.loaded.transform, self.settings.max_image_pixels)
        info = model_info(self.loaded, self.mp)
        _, shown, info = fit_input(tensor.unsqueeze(0).to(self.loaded.device), self.loaded.module, info)
        return input_tile(shown[0], info.mean, info.std)

    def label(self, index: int) -> str:
        """The file-name label of the run's image of global ``index``."""
        return self.plan.labels[(self.plan.all_images or self.plan.images)[index]]

    def save_partials(self, method: Method, layers: list[str]) -> None:
        """A shard's gathered states of ``method``, one file per layer; a layer that fails to save is recorded."""
        for layer in layers:
            try:
                if self.partials is None:
                    raise RuntimeError("a sharded run needs a job folder to save its partial states in")
                save_state(partial_path(self.partials, method.name, layer), self.states[method.name][layer])
            except Exception as exc:  # noqa: BLE001 - e.g. a state that is not numbers: fails only its own artefact
                self.fail_method([], method, layer, exc)
            self.progress.advance(compute_cost(method))

    def _read(self, image: Path) -> torch.Tensor | None:
        """The image preprocessed for this model, or None (its artefacts failed, the reason said once per run)."""
        try:
            tensor, notes = prepare(image, self.loaded.transform, self.settings.max_image_pixels)
        except Exception as exc:  # noqa: BLE001 - a bad image fails only its own artefacts
            reason = str(exc) if isinstance(exc, ImageReadError) else error_text(exc)
            if image not in self.told:
                self.told.add(image)
                log.warning("image %s failed to load: %s", image, reason)
            self.fail_keys(self.plan.artefacts(self.mp, [image]), f"image failed to load: {reason}")
            return None
        if notes and image not in self.told:
            self.told.add(image)
            log.info("image %s: %s", image, "; ".join(notes))
        return tensor

    def batch(self, images: list[Path], gather_only: bool = False) -> None:
        """One batch: its forward and every method; only artefacts not yet verified are written. ``gather_only``:
        the forward for the gathering methods alone."""
        raise_if_stopped()
        try:
            read = [(image, self._read(image)) for image in images]
            kept = [(image, tensor) for image, tensor in read if tensor is not None]
            if kept:
                self._pass(kept, gather_only)
        finally:
            self.progress.advance(FORWARD * len(images))
        if self.after_batch is not None:
            self.after_batch()

    def _pass(self, kept: list[tuple[Path, torch.Tensor]], gather_only: bool = False) -> None:
        """The shared forward and every method for these images; when memory runs out, the batch is split in two
        and each half runs on its own (what one half already made is not made again)."""
        images = [image for image, _ in kept]
        info = model_info(self.loaded, self.mp)
        x, shown, info = fit_input(torch.stack([t for _, t in kept]).to(self.loaded.device), self.loaded.module, info)
        sources = [input_tile(t, info.mean, info.std) for t in shown]
        self.input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        fresh = any(key not in self.verified for key in self.plan.artefacts(self.mp, images))
        gathered = copy.deepcopy(self.states)  # what the states were before this pass, should it run out of memory
        if gather_only:
            methods = list(self.gathering)
        else:
            # nothing to make: the forward is for predictions (and gathering)
            methods = (self.plan.image_methods() if fresh else []) + ([] if self.gather_first else self.gathering)
        work = BatchWork(
            self.loaded.module,
            self.mp.layers,
            methods,
            emit=lambda m, outs: self.emit(images, m, outs),
            fail=lambda m, layer, exc: self.fail_method(images, m, layer, exc),
            want_logits=self.settings.predictions and not gather_only,
            strategy=self.settings.backward_strategy,
            states=self.states,
            finished=self.finished,
        )
        batch = None
        try:
            labels = [self.plan.labels[i] for i in images]
            indices = [self.index[i] for i in images]
            batch = Batch(info, x, sources, labels, seed=self.settings.seed, chunk=self._chunk(), indices=indices)
            logits = work.run(batch)
            if not gather_only:
                self.predictions(logits, images)
        except Exception as exc:  # noqa: BLE001 - fail what is left of this batch, keep the rest of the run
            del x, work, batch
            if out_of_memory(exc) and len(kept) > 1:
                self.states.clear()
                self.states.update(gathered)  # the halves gather this batch again
                half = len(kept) // 2
                log.warning(
                    "%s: a batch of %d images ran out of memory; running it as %d + %d",
                    self.mp.name,
                    len(kept),
                    half,
                    len(kept) - half,
                )
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self._pass(kept[:half], gather_only)
                self._pass(kept[half:], gather_only)
                return
            error = error_text(exc)
            log.error("%s: batch of %d image(s) failed: %s", self.mp.name, len(kept), error)
            self.fail_keys(self.plan.artefacts(self.mp, images), error)

    def _chunk(self) -> int:
        """Inputs per inference forward within memory_budget, estimated once when a method reads other outputs."""
        if self.chunk is None:
            readers = any(m.reads_outputs for m in self.plan.image_methods())
            budget, device = self.settings.memory_budget, self.settings.device
            self.chunk = inference_chunk(self.mp, budget, device) if readers else 32
        return self.chunk

    def predictions(self, logits: torch.Tensor | None, images: list[Path]) -> None:
        """Top-5 ImageNet classes per image, for models whose logits are ImageNet's classes."""
        categories = self.loaded.categories
        if logits is None or not self.settings.predictions or len(categories) != logits.shape[1]:
            return
        probs = torch.softmax(logits.detach().float(), dim=1).cpu()
        top = torch.topk(probs, min(5, probs.shape[1]), dim=1)
        table = self.predicted.setdefault(self.mp.name, {})
        for i, image in enumerate(images):
            table[self.plan.labels[image]] = [
                {
                    "class_index": int(c),
                    "class_name": categories[int(c)],
                    "prob": round(float(p), 5),
                }
                for p, c in zip(top.values[i], top.indices[i], strict=True)
            ]
