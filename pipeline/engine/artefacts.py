"""An artefact before and while it is made: its manifest record, where its PNG goes, the drawing a render thread
runs, and the model facts a method is handed; shared by a model's run and by the merge of shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.methods.base import Method, ModelInfo, Output
from pipeline.models.custom import normalization
from pipeline.models.registry import LoadedModel
from pipeline.output.files import safe_name
from pipeline.output.record import Record
from pipeline.plan import ModelPlan, Plan
from pipeline.render.extras import file_bytes
from pipeline.render.figures import draw


def out_of_memory(exc: BaseException) -> bool:
    """Whether a pass failed for want of memory: MemoryError, CUDA's OutOfMemoryError, or the CPU allocator's
    RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def model_info(loaded: LoadedModel, plan: ModelPlan) -> ModelInfo:
    mean, std = normalization(loaded.transform)
    return ModelInfo(loaded.name, tuple(loaded.categories), mean, std, plan.num_classes)


@dataclass
class Drawing:
    """One artefact's pictures, drawn when called (on a render thread): (PNG image, exact array, attached files
    as {name: (suffix, bytes)})."""

    output: Output
    header: list[str]
    font_px: int = 12

    @property
    def array(self):
        return self.output.array

    def __call__(self):
        files = {name: file_bytes(item, self.font_px) for name, item in self.output.files.items()}
        return draw(self.output.picture, self.header, self.font_px), self.output.array, files


def make_record(plan: Plan, mp: ModelPlan, method: Method, layer: str | None, image: Path | None) -> Record:
    """The manifest record of one artefact before it is made (no output, files or status yet)."""
    return Record(
        model=mp.name,
        weights=mp.weights.label,
        random_weights=mp.weights.random,
        layer=layer,
        layer_index=next((item.index for item in mp.layers if item.name == layer), None),
        method=method.name,
        image=None if image is None else str(image),
        image_label=None if image is None else plan.labels[image],
        image_name=None if image is None else plan.name(image),
        params=method.manifest_params(),
        model_kwargs=mp.kwargs,
    )


def png_path(plan: Plan, mp: ModelPlan, method: Method, layer: str | None, image: Path | None) -> str:
    """Where an artefact's picture goes, relative to the run folder."""
    stem = safe_name(layer) if layer is not None else method.image_stem()
    if image is not None:
        stem = f"{stem}__{plan.labels[image]}"
    return f"{safe_name(mp.name)}/{method.name}/{stem}.png"
