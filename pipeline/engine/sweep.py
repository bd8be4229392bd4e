"""The sweep: every model of the plan (the next one loading while the current one works), its per-layer
methods, then its image batches; each method output becomes a PNG (and .npy) with a manifest line.

A failing artefact, image, batch or model is recorded against the plan's own list of artefacts and the run
goes on. A folder that already holds a run is resumed (``resume``): artefacts verified on disk are skipped, and
a model or batch with nothing left to make is not even loaded or run. Batches always hold the same images, so
a redone artefact has the same bytes as in an uninterrupted run. ``run.json`` is written when the run starts,
after every batch, and when it ends, also when a signal stops it (``pipeline.status``).
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from tqdm import TqdmWarning
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.config import Settings
from pipeline.engine.artefacts import make_record, png_path
from pipeline.engine.model_run import ModelRun
from pipeline.engine.progress import PICTURE, Progress
from pipeline.engine.resume import MANIFEST, Expect, Resumed, check_same_settings, resume
from pipeline.models.registry import LoadedModel, load_model
from pipeline.output.files import exclusive, read_json, write_bytes, write_json
from pipeline.output.manifest import Manifest
from pipeline.output.record import Record
from pipeline.output.writer import Writer, error_text, first_line
from pipeline.plan import ArtefactKey, ModelPlan, Plan
from pipeline.status import FAILED, OK, interrupted_code, raise_if_stopped

log = logging.getLogger("pipeline.engine")
PACKAGES = ("torch", "torchvision", "hydra-core", "omegaconf", "matplotlib", "pillow", "numpy", "tqdm")


@dataclass
class Summary:
    """What a run produced: counts, failures, the top-5 predictions per model and image, and how it ended."""

    planned: int
    ok: int = 0  # written by this run
    skipped: int = 0  # already in the folder, verified
    failed: list[Record] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "running"  # finished | interrupted | crashed
    batch_sizes: dict[str, int] = field(default_factory=dict)  # images per pass, per model
    stopped_by: str | None = None
    exit_code: int = OK

    @property
    def remaining(self) -> int:
        """Artefacts neither in place nor failed (a stopped run's unfinished work)."""
        return max(0, self.planned - self.ok - self.skipped - len(self.failed))

    def counts(self) -> dict[str, int]:
        return {
            "planned": self.planned,
            "skipped": self.skipped,
            "ok": self.ok,
            "failed": len(self.failed),
            "remaining": self.remaining,
        }


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the pictures."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


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


@contextmanager
def _warnings_logged() -> Iterator[None]:
    """Library warnings go through logging, in one line each, so they are redirected around the bar like every
    other line (Python would print them with a source line straight to stderr)."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, TqdmWarning):  # raised inside the bar's own drawing, under tqdm's lock: not ours
            return
        logging.getLogger("py.warnings").warning("%s: %s", category.__name__, first_line(message))

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _ending(summary: Summary, stop: BaseException | None) -> None:
    """Fill in how the run ended: finished, interrupted (a signal, or the scheduler's requeue) or crashed."""
    if stop is None:
        summary.status, summary.exit_code = "finished", FAILED if summary.failed else OK
    elif interrupted_code(stop) is not None:
        summary.status, summary.exit_code = "interrupted", interrupted_code(stop)
        summary.stopped_by = getattr(stop, "name", "SIGINT")
    elif isinstance(stop, SystemExit):  # submitit's requeue handler exits the job process from a signal
        summary.status, summary.stopped_by = "interrupted", f"exit {stop.code} (job scheduler)"
        summary.exit_code = stop.code if isinstance(stop.code, int) else FAILED
    else:
        summary.status, summary.exit_code = "crashed", FAILED


def _run_info(summary: Summary, info: dict, stop: BaseException | None) -> dict:
    """run.json's content: how the run stands or ended (an exit code only once it has one), counts, failures."""
    info = {**info, "status": summary.status, "counts": summary.counts()}
    if summary.status != "running":
        info["exit_code"] = summary.exit_code
    if summary.stopped_by:
        info["stopped_by"] = summary.stopped_by
    if summary.status == "crashed":
        info["error"] = error_text(stop)
    info["failures"] = [
        {"model": r.model, "layer": r.layer, "method": r.method, "image": r.image, "error": r.error}
        for r in summary.failed
    ]
    info["predictions"] = summary.predictions
    if summary.batch_sizes:
        info["batch_sizes"] = summary.batch_sizes
    if summary.seconds:
        info["seconds"] = summary.seconds
    return info


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


class _Quiet:
    """Progress for runs with no bar (the Python API in memory)."""

    def advance(self, cost: float, artefacts: int = 0) -> None:
        pass

    def at_model(self, name: str) -> None:
        pass


def sweep_models(settings: Settings, plan: Plan, sink) -> Summary:
    """Every model of ``plan`` through ``sink`` (``submit(record, png, figure)`` and ``fail(record, error)``), with
    no files, no resume and no bar: the Python API's in-memory path, on the same ModelRun as a sweep."""
    summary = Summary(planned=plan.count())
    runs = [
        ModelRun(settings, plan, mp, writer=sink, progress=_Quiet(), predicted=summary.predictions)
        for mp in plan.models
    ]
    for model_run, (_, pending) in zip(runs, loaded_ahead(plan.models, settings), strict=True):
        model_run.run(pending)
    summary.status = "finished"
    return summary


def run_models(
    todo: list[ModelRun],
    settings: Settings,
    root: Path,
    manifest: Manifest,
    progress: Progress,
    observer=None,
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Each model's run in turn, the next model loading meanwhile, its artefacts written under ``root`` (and shown
    to ``observer``); however it ends, the writer is drained (on a stop, only pictures already being drawn) and
    the bar closed. A sweep's runs and the merge of shards both go through here."""
    writer = Writer(
        root,
        manifest,
        settings.save_raw,
        settings.render_workers,
        settings.png_compression,
        on_done=lambda _record: progress.advance(PICTURE, 1),
    )
    sink = writer if observer is None else Tee(writer, observer)
    stopped = True
    try:
        for model_run, (_, pending) in zip(todo, loaded_ahead([r.mp for r in todo], settings), strict=True):
            model_run.writer, model_run.progress = sink, progress
            if after_batch is not None:
                model_run.after_batch = after_batch
            progress.at_model(model_run.mp.name)
            model_run.run(pending)
        stopped = False
    finally:
        writer.close(cancel=stopped)
        progress.close()


def run(
    settings: Settings,
    plan: Plan,
    root: Path,
    config: dict | None = None,
    files: dict[str, bytes] | None = None,
    observer=None,
) -> Summary:
    """Produce every artefact of ``plan`` under ``root`` (resuming what an earlier run left there), plus ``files``
    (e.g. the resolved config) once the folder is known to be this run's; never raises for a failing artefact.
    ``observer`` (a sink like the Writer) also sees every artefact as it is made.

    Raises UserError when ``root`` holds a run made with other settings or another run is writing into it, and
    re-raises what stopped the run (``Interrupted``, SystemExit) once ``run.json`` says so."""
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / ".run.lock", f"another run is writing into {root} right now"):
        previous = read_json(root / "run.json")
        resumed = Resumed()
        if (root / MANIFEST).is_file():
            if config is not None:
                check_same_settings(root, previous, config, settings.device)
            resumed = resume(root, plan, _expect(plan, settings), previous)
        for name, data in (files or {}).items():
            write_bytes(root / name, data)
        return _sweep(settings, plan, root, config, resumed, started, observer)


def _expect(plan: Plan, settings: Settings) -> Expect:
    """For resume: the record, png and raw path this run would write for an artefact."""
    models = {mp.name: mp for mp in plan.models}
    methods = {m.name: m for m in plan.methods}

    def expect(key: ArtefactKey) -> tuple[Record, str, str | None]:
        mp, method = models[key.model], methods[key.method]
        png = png_path(plan, mp, method, key.layer, key.image)
        raw = str(Path(png).with_suffix(".npy")) if settings.save_raw else None
        return make_record(plan, mp, method, key.layer, key.image), png, raw

    return expect


def _sweep(
    settings: Settings, plan: Plan, root: Path, config: dict | None, resumed: Resumed, started: float, observer=None
) -> Summary:
    summary = Summary(planned=plan.count(), skipped=len(resumed.verified))
    known = resumed.predictions if settings.predictions else {}
    labels = set(plan.labels.values())
    for mp in plan.models:
        carried = {k: v for k, v in (known.get(mp.name) or {}).items() if k in labels}
        if carried:
            summary.predictions[mp.name] = carried
    told: set = set()
    runs = [
        ModelRun(
            settings,
            plan,
            mp,
            predicted=summary.predictions,
            verified=frozenset(k for k in resumed.verified if k.model == mp.name),
            known_predictions=summary.predictions.get(mp.name, {}),
            told=told,
            partials=root,
        )
        for mp in plan.models
    ]
    todo = [r for r in runs if r.needs_load()]
    summary.batch_sizes = {r.mp.name: r.batch_size for r in runs if r.batch_size}
    info = {
        "status": "running",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "config": config,
        "versions": versions(),
        "device": settings.device,
    }
    write_json(root / "run.json", {**info, "counts": summary.counts()})
    log.info(
        "planned %d artefacts: %d model(s), %d image(s), methods %s",
        summary.planned,
        len(plan.models),
        len(plan.images),
        ", ".join(m.name for m in plan.methods),
    )
    stop: BaseException | None = None
    with Manifest(root / MANIFEST) as manifest, logging_redirect_tqdm(), _warnings_logged():

        def checkpoint() -> None:
            summary.ok, summary.failed = manifest.ok, list(manifest.failed)
            write_json(root / "run.json", _run_info(summary, info, None))

        progress = Progress(sum(r.cost() for r in todo), summary.planned, summary.skipped)
        try:
            raise_if_stopped()
            run_models(todo, settings, root, manifest, progress, observer, checkpoint)
        except BaseException as exc:
            stop = exc
            raise
        finally:
            summary.ok, summary.failed = manifest.ok, list(manifest.failed)
            summary.seconds = round(time.perf_counter() - started, 2)
            _ending(summary, stop)
            write_json(root / "run.json", _run_info(summary, info, stop))
            if stop is not None:
                stop.summary = summary  # for the one line that tells the user
    return summary
