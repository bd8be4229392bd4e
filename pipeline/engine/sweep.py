"""The sweep: every model of the plan (the next one loading while the current one works), its per-layer
methods, then its image batches; each method output becomes a PNG (and .npy) with a manifest line.

A failing artefact, image, batch or model is recorded against the plan's own list of artefacts and the run
goes on. ``run.json`` is written when the run starts and rewritten when it ends.
"""

from __future__ import annotations

import logging
import platform
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from tqdm import TqdmWarning, tqdm

with warnings.catch_warnings():  # in a notebook without ipywidgets, tqdm.auto warns on import; the bar is plain text
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.config import Settings
from pipeline.engine.shared import Batch
from pipeline.engine.work import BatchWork, layer_outputs
from pipeline.images import prepare
from pipeline.methods.base import Method, ModelInfo, Output, Scope
from pipeline.models.custom import normalization
from pipeline.models.registry import LoadedModel, load_model
from pipeline.output.files import safe_name, write_json
from pipeline.output.manifest import Manifest
from pipeline.output.record import Record
from pipeline.output.writer import Writer, error_text
from pipeline.plan import ArtefactKey, ModelPlan, Plan
from pipeline.render.extras import file_bytes
from pipeline.render.figures import draw, header_lines, input_tile

log = logging.getLogger("pipeline.engine")
PACKAGES = ("torch", "torchvision", "hydra-core", "omegaconf", "matplotlib", "pillow", "numpy", "tqdm")


@dataclass
class Summary:
    """What a run produced: counts, failures, and the top-5 predictions per model and image."""

    planned: int
    ok: int = 0
    failed: list[Record] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)
    seconds: float = 0.0


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the pictures."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def model_info(loaded: LoadedModel, plan: ModelPlan) -> ModelInfo:
    mean, std = normalization(loaded.transform)
    return ModelInfo(loaded.name, tuple(loaded.categories), mean, std, plan.num_classes)


@dataclass
class Drawing:
    """One artefact's pictures, drawn when called (on a render thread): (PNG image, exact array, extra files)."""

    output: Output
    header: list[str]
    font_px: int = 12

    @property
    def array(self):
        return self.output.array

    def __call__(self):
        files = {name: file_bytes(item, self.font_px) for name, item in self.output.files.items()}
        return draw(self.output.picture, self.header, self.font_px), self.output.array, files


@dataclass
class ModelRun:
    """One model's share of a run: turns method outputs into records and files, and failures into records."""

    settings: Settings
    plan: Plan
    mp: ModelPlan
    writer: Writer
    summary: Summary
    done: set[ArtefactKey] = field(default_factory=set)
    loaded: LoadedModel | None = None

    # --- records and files ----------------------------------------------------------------------------------------
    def record(self, method: Method, layer: str | None, image: Path | None, output: Output | None = None) -> Record:
        index = next((item.index for item in self.mp.layers if item.name == layer), None)
        params = method.manifest_params()
        extra = {}
        if output is not None:
            params.update(output.params)
            extra = output.fields
        return Record(
            model=self.mp.name,
            weights=self.mp.weights.label,
            random_weights=self.mp.weights.random,
            layer=layer,
            layer_index=index,
            method=method.name,
            image=None if image is None else str(image),
            image_label=None if image is None else self.plan.labels[image],
            params=params,
            model_kwargs=self.mp.kwargs,
            extra=extra,
        )

    def png_path(self, method: Method, layer: str | None, image: Path | None) -> str:
        stem = safe_name(layer) if layer is not None else method.image_stem()
        if image is not None:
            stem = f"{stem}__{self.plan.labels[image]}"
        return f"{safe_name(self.mp.name)}/{method.name}/{stem}.png"

    def header(self, method: Method, output: Output, image: Path | None) -> list[str]:
        layer = next((item for item in self.mp.layers if item.name == output.layer), None)
        where = output.picture.where or (f"layer {layer.name} ({layer.describe()})" if layer else "")
        label = self.mp.weights.label
        weights = label.upper() if self.mp.weights.random else label
        flag = getattr(self.loaded.module, "transform_input", None) if self.loaded else None
        if flag is not None:  # googlenet / inception_v3: say how the input was transformed
            weights += f" (transform_input={flag})"
        return header_lines(
            self.mp.name,
            method.name,
            where,
            weights,
            None if image is None else self.plan.labels[image],
            output.picture.header,
        )

    def emit(self, images: list[Path], method: Method, outputs: list[Output]) -> None:
        font_px = self.settings.font_px
        for output in outputs:
            image = None if output.image is None else images[output.image]
            key = ArtefactKey(self.mp.name, method.name, output.layer, image)
            if key in self.done:  # already recorded (e.g. failed while a per-image method gathered its layers)
                continue
            self.done.add(key)
            drawing = Drawing(output, self.header(method, output, image), font_px)
            self.writer.submit(
                self.record(method, output.layer, image, output), self.png_path(method, output.layer, image), drawing
            )

    def fail_keys(self, keys, error: str) -> None:
        methods = {m.name: m for m in self.plan.methods}
        for key in keys:
            if key not in self.done:
                self.done.add(key)
                self.writer.fail(self.record(methods[key.method], key.layer, key.image), error)

    def fail_method(self, images: list[Path], method: Method, layer: str | None, exc: BaseException) -> None:
        error = error_text(exc)
        log.error("%s %s %s failed: %s", self.mp.name, method.name, layer or "", error)
        if method.scope is Scope.LAYER:
            keys = [ArtefactKey(self.mp.name, method.name, layer, None)]
        else:
            keys = [ArtefactKey(self.mp.name, method.name, layer, image) for image in images]
        self.fail_keys(keys, error)

    # --- the work -------------------------------------------------------------------------------------------------
    def run(self, pending: Future[LoadedModel]) -> None:
        started = time.perf_counter()
        try:
            self.loaded = pending.result()
        except Exception as exc:  # noqa: BLE001 - one model failing must not sink the sweep
            error = error_text(exc)
            log.error("%s failed: %s", self.mp.name, error)
            self.fail_keys(self.plan.artefacts(self.mp), error)
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
            if method.scope is Scope.LAYER:
                layer_outputs(
                    method,
                    module,
                    self.mp.layers,
                    lambda m, outs: self.emit([], m, outs),
                    lambda m, layer, exc: self.fail_method([], m, layer, exc),
                )
        if self.plan.image_methods() or self.settings.predictions:
            images, size = self.plan.images, self.settings.batch_size
            for start in range(0, len(images), size):
                self.batch(images[start : start + size])

    def batch(self, images: list[Path]) -> None:
        loaded = self.loaded
        tensors, kept = [], []
        for image in images:
            try:
                tensors.append(prepare(image, loaded.transform))
                kept.append(image)
            except Exception as exc:  # noqa: BLE001 - a bad image fails only its own artefacts
                log.warning("image %s failed to load: %s", image, exc)
                self.fail_keys(self.plan.artefacts(self.mp, [image]), f"image failed to load: {error_text(exc)}")
        if not kept:
            return
        info = model_info(loaded, self.mp)
        x = torch.stack(tensors).to(loaded.device)
        sources = [input_tile(t, info.mean, info.std) for t in tensors]
        batch = Batch(info, x, sources, [self.plan.labels[i] for i in kept], seed=self.settings.seed)
        work = BatchWork(
            loaded.module,
            self.mp.layers,
            self.plan.image_methods(),
            emit=lambda m, outs: self.emit(kept, m, outs),
            fail=lambda m, layer, exc: self.fail_method(kept, m, layer, exc),
            want_logits=self.settings.predictions,
            strategy=self.settings.backward_strategy,
        )
        try:
            logits = work.run(batch)
            self.predictions(logits, kept)
        except Exception as exc:  # noqa: BLE001 - fail what is left of this batch, keep the rest of the run
            error = error_text(exc)
            log.error("%s: batch of %d image(s) failed: %s", self.mp.name, len(kept), error)
            self.fail_keys(self.plan.artefacts(self.mp, kept), error)

    def predictions(self, logits: torch.Tensor | None, images: list[Path]) -> None:
        """Top-5 ImageNet classes per image, for models whose logits are ImageNet's classes."""
        categories = self.loaded.categories
        if logits is None or not self.settings.predictions or len(categories) != logits.shape[1]:
            return
        probs = torch.softmax(logits.detach().float(), dim=1).cpu()
        top = torch.topk(probs, min(5, probs.shape[1]), dim=1)
        table = self.summary.predictions.setdefault(self.mp.name, {})
        for i, image in enumerate(images):
            table[self.plan.labels[image]] = [
                {
                    "class_index": int(c),
                    "class_name": categories[int(c)],
                    "prob": round(float(p), 5),
                }
                for p, c in zip(top.values[i], top.indices[i], strict=True)
            ]


def loaded_ahead(models: list[ModelPlan], settings: Settings) -> Iterator[tuple[ModelPlan, Future[LoadedModel]]]:
    """Each model with its load under way; while one is worked on, the next is built (or read from disk) on a
    background thread, so a sweep does not wait for model construction after the first (one extra model in
    memory). Loads run one at a time, in plan order, so a seeded random init is the same as a plain load."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as loader:

        def start(mp: ModelPlan) -> Future[LoadedModel]:
            if mp.custom is not None:
                return loader.submit(mp.custom.load, settings.device)
            return loader.submit(load_model, mp.name, mp.weights, settings.device, settings.model_cache, mp.kwargs)

        following = start(models[0]) if models else None
        for i, mp in enumerate(models):
            current, following = following, start(models[i + 1]) if i + 1 < len(models) else None
            yield mp, current


def sweep_models(settings: Settings, plan: Plan, sink, summary: Summary, on_model=None) -> None:
    """Every model of ``plan`` through ``sink`` (``submit(record, png, figure)`` and ``fail(record, error)``:
    the file Writer, or the Python API's in-memory collector), the next model loading while one works."""
    for mp, pending in loaded_ahead(plan.models, settings):
        if on_model is not None:
            on_model(mp)
        ModelRun(settings, plan, mp, sink, summary).run(pending)


class Tee:
    """A sink that hands every artefact to the Writer and to an observer (the Python API with ``out=DIR``)."""

    def __init__(self, writer: Writer, observer) -> None:
        self.writer, self.observer = writer, observer

    def submit(self, record: Record, png: str, figure) -> None:
        self.observer.submit(record, png, figure)
        self.writer.submit(record, png, figure)

    def fail(self, record: Record, error: str) -> None:
        self.observer.fail(record, error)
        self.writer.fail(record, error)


def run(settings: Settings, plan: Plan, root: Path, config: dict | None = None, observer=None) -> Summary:
    """Produce every artefact of ``plan`` under ``root``; never raises for a failing artefact.

    ``observer`` (a sink like the Writer) also sees every artefact as it is made."""
    root.mkdir(parents=True, exist_ok=True)
    summary = Summary(planned=plan.count())
    started = time.perf_counter()
    info = {"status": "running", "config": config, "versions": versions(), "device": settings.device}
    write_json(root / "run.json", info)
    log.info(
        "planned %d artefacts: %d model(s), %d image(s), methods %s",
        summary.planned,
        len(plan.models),
        len(plan.images),
        ", ".join(m.name for m in plan.methods),
    )
    with Manifest(root / "manifest.jsonl") as manifest, logging_redirect_tqdm():
        bar = tqdm(total=summary.planned, unit="png", desc="artefacts", dynamic_ncols=True, mininterval=0.5)
        writer = Writer(
            root,
            manifest,
            settings.save_raw,
            settings.render_workers,
            settings.png_compression,
            on_done=lambda _r: bar.update(1),
        )
        sink = writer if observer is None else Tee(writer, observer)
        try:
            sweep_models(settings, plan, sink, summary, on_model=lambda mp: bar.set_postfix_str(mp.name))
        finally:
            writer.close()
            bar.close()
        summary.ok, summary.failed = manifest.ok, list(manifest.failed)
    summary.seconds = round(time.perf_counter() - started, 2)
    info.update(
        status="finished",
        counts={"planned": summary.planned, "ok": summary.ok, "failed": len(summary.failed)},
        failures=[
            {"model": r.model, "layer": r.layer, "method": r.method, "image": r.image, "error": r.error}
            for r in summary.failed
        ],
        predictions=summary.predictions,
        seconds=summary.seconds,
    )
    write_json(root / "run.json", info)
    return summary
