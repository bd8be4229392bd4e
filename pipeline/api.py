"""The Python door, beside the CLI: ``visualize`` for notebooks and a user's own models, ``sweep`` for scripts.

Both run the CLI's own config checks, plan, engine and methods; nothing here computes a picture itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image
from torch import nn

from pipeline.config import register_configs, settings_from
from pipeline.engine.sweep import run, sweep_models
from pipeline.errors import UserError
from pipeline.images import InMemoryImage, resolve_images
from pipeline.models.custom import from_module
from pipeline.output.files import encode_png
from pipeline.output.record import Record
from pipeline.plan import make_plan

CONF = Path(__file__).resolve().parents[1] / "conf"


class Artefact:
    """One artefact, as a sweep writes it: ``array`` (what the ``.npy`` holds), ``image`` (the PNG's picture,
    drawn on first use; shown inline by Jupyter) and ``record`` (its manifest line)."""

    def __init__(self, record: dict[str, Any], drawing: Any = None) -> None:
        self.record = record
        self._drawing = drawing
        self._image: Image.Image | None = None

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok"

    @property
    def array(self) -> np.ndarray | None:
        return None if self._drawing is None else self._drawing.array

    @property
    def image(self) -> Image.Image | None:
        if self._image is None and self._drawing is not None:
            self._image = self._drawing()[0]
        return self._image

    def _repr_png_(self) -> bytes | None:
        return None if self.image is None else encode_png(self.image)

    def __repr__(self) -> str:
        r = self.record
        where = r.get("layer") or "per image"
        return f"<Artefact {r.get('model')} · {r.get('method')} · {where} · {r.get('image_label') or 'no image'}>"


class _Collect:
    """The engine's sink for the Python API: keeps each artefact in memory, its picture drawn only when asked."""

    def __init__(self, save_raw: bool) -> None:
        self.save_raw = save_raw
        self.artefacts: list[Artefact] = []

    def submit(self, record: Record, png: str, drawing) -> None:
        raw = str(Path(png).with_suffix(".npy")) if self.save_raw else None
        self.artefacts.append(Artefact(record.done(png, raw).to_json(), drawing))

    def fail(self, record: Record, error: str) -> None:
        self.artefacts.append(Artefact(record.failed(error).to_json()))


def compose(overrides: Iterable[str] = ()) -> Any:
    """The CLI's config (``conf/config.yaml`` and every method's defaults) with ``overrides``, via the compose API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF), job_name="api"):
        return hydra_compose("config", overrides=list(overrides))


def _images(images: Any) -> list:
    """Paths, folders, globs and ``samples``; PIL images; tensors [3, H, W] or [N, 3, H, W] already preprocessed."""
    items = [images] if isinstance(images, (str, Path, Image.Image, torch.Tensor)) else list(images)
    found: list = []
    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            found.append(InMemoryImage(f"image_{i}", picture=item))
        elif isinstance(item, torch.Tensor):
            batch = item[None] if item.dim() == 3 else item
            if batch.dim() != 4 or batch.shape[1] != 3:
                raise UserError(f"images[{i}]: a tensor must be [3, H, W] or [N, 3, H, W], got {tuple(item.shape)}.")
            found += [
                InMemoryImage(f"image_{i}" + (f"_{j}" if len(batch) > 1 else ""), tensor=t) for j, t in enumerate(batch)
            ]
        elif isinstance(item, (str, Path)):
            found += resolve_images([str(item)])
        else:
            raise UserError(f"images[{i}]: {type(item).__name__} is not a path, a PIL image or a tensor.")
    if not found:
        raise UserError("images: give at least one path, PIL image or tensor.")
    return found


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """The module in eval mode for the run, every submodule's own mode restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def visualize(
    model: str | nn.Module,
    layers: Any = "all",
    images: Any = "samples",
    methods: Iterable[str] | None = None,
    weights: str | None = None,
    transform: Any = None,
    device: str = "auto",
    out: str | Path | None = None,
    seed: int = 0,
    batch_size: int | str = "auto",
    save_raw: bool = False,
    download: bool = False,
    name: str | None = None,
    **method_params: dict[str, Any],
) -> Iterator[Artefact]:
    """Visualise a torchvision model (by name) or your own ``nn.Module``; yield one Artefact per picture.

    ``layers``, ``methods`` and every method's parameters (``feature_maps={"top_k": 16}``) mean what they mean
    in the CLI and are checked the same way. ``transform`` preprocesses PIL images and files for a module
    (default: ImageNet's resize 256, centre crop 224, mean and std); torchvision names use their weights' own
    transforms. ``weights`` defaults to DEFAULT for names; nothing is downloaded unless ``download=True``. With
    ``out`` the CLI's files (PNGs, manifest, run.json) are written there too. The module is never changed.
    """
    cfg = compose(["predictions=false", "report=false"])
    with open_dict(cfg):
        values: dict[str, Any] = {"layers": layers, "seed": seed, "batch_size": batch_size, "save_raw": save_raw}
        if methods is not None:
            values["methods"] = [methods] if isinstance(methods, str) else list(methods)
        if isinstance(model, str):
            values.update(models=[model], weights="DEFAULT" if weights is None else weights)
            values["device"] = device
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=False)
        for method, params in method_params.items():
            if not isinstance(params, dict):
                raise UserError(f"{method}: give its parameters as a dict, e.g. {method}={{'top_k': 16}}.")
            for key, value in params.items():
                OmegaConf.update(cfg, f"{method}.{key}", value, merge=False)
    custom = None
    if isinstance(model, nn.Module):
        custom = from_module(model, name or type(model).__name__.lower(), transform)
        found = next(iter(model.parameters()), None)
        cfg.device = str(found.device.type) if found is not None else "cpu"
        if device not in ("auto", cfg.device):
            raise UserError(f"device: the module is on {cfg.device}; move it there yourself (it is never moved).")
    elif transform is not None:
        raise UserError("transform: torchvision models use their weights' own preprocessing; pass a module instead.")
    settings = settings_from(cfg, models=[custom] if custom else None)
    plan = make_plan(settings, images=_images(images), download=download)
    collector = _Collect(save_raw)
    guard = _eval_mode(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
    with guard:
        if out is not None:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            run(settings, plan, Path(out), config=resolved, observer=collector)
        else:
            sweep_models(settings, plan, collector)
    yield from collector.artefacts


@dataclass
class SweepResult:
    """What ``sweep`` ran: the run folder, the exit code ``run.py`` would give, and ``run.json``."""

    folder: Path
    exit_code: int
    summary: dict[str, Any]


def sweep(overrides: Iterable[str] = ()) -> SweepResult:
    """Run exactly what ``python run.py <overrides>`` runs (Hydra's own job runner: run folder, logging, the
    report callback), from a notebook or a script; return its folder, exit code and run.json."""
    import json

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.main import main as task
    from pipeline.status import last_job

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF), job_name="run"):
        done = GlobalHydra.instance().hydra.run(config_name="config", task_function=task, overrides=list(overrides))
    folder = Path(done.hydra_cfg.hydra.runtime.output_dir)
    try:
        summary = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    return SweepResult(folder, last_job()[0], summary)


__all__ = ["Artefact", "SweepResult", "compose", "sweep", "visualize"]
