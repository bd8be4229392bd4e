"""How many images fit in one pass: ``batch_size: auto`` sizes each model's batches to ``memory_budget``.

The estimate comes from a forward of the model's skeleton on the meta device at its input size (no memory, no
weights): the bytes every leaf module outputs for one image. A pass that keeps its autograd graph holds about
all of them (calibrated on resnet50, vgg16 and efficientnet_b0: 1.1-1.7 times the sum, plus what backwards
and class-gradient caches add), so it is counted at ``GRAPH_FACTOR`` times; a streaming pass holds a few
layers' outputs at a time (``STREAM_FACTOR`` times the largest). The loaded model itself, the one loaded ahead
and the runtime are taken off the budget first. The same machine and settings always give the same batches,
so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.engine.inputs import input_channels, input_dtype

log = logging.getLogger("pipeline.engine")

GRAPH_FACTOR = 3.0
STREAM_FACTOR = 4.0
RUNTIME_BYTES = 700 * 2**20  # Python, torch and the render queue, measured as a run's memory with no model
MAX_BATCH = 64
OPTIMISING_MOST = 65536  # inputs per forward of a method optimising its own inputs, before its own bound


def total_memory(device: str) -> int:
    """The memory of the device a run computes on: the GPU's, else this machine's RAM (or cgroup limit)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a container's own limit, when it has one
        with open("/sys/fs/cgroup/memory.max") as handle:
            text = handle.read().strip()
        if text.isdigit():
            ram = min(ram, int(text))
    except OSError:
        pass
    return int(ram)


def budget_bytes(budget: int | float, device: str) -> int:
    """``memory_budget`` in bytes: a size as it is, a fraction (0, 1] of the device's memory."""
    return int(budget * total_memory(device)) if isinstance(budget, float) else int(budget)


@dataclass(frozen=True)
class Footprint:
    """One image's activations in one pass: their sum and the largest, in bytes."""

    total: int
    largest: int

    def per_image(self, keeps_graph: bool) -> int:
        return int(self.total * GRAPH_FACTOR) if keeps_graph else int(self.largest * STREAM_FACTOR)


def footprint(skeleton: nn.Module, size: int) -> Footprint:
    """What one image of ``size`` px makes flow through ``skeleton`` (a meta-device module)."""
    total, largest = 0, 0
    handles = []

    def count(module, inputs, output) -> None:
        nonlocal total, largest
        for tensor in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(tensor, torch.Tensor):
                size_of = tensor.numel() * tensor.element_size()
                total, largest = total + size_of, max(largest, size_of)

    for module in skeleton.modules():
        if not list(module.children()):
            handles.append(module.register_forward_hook(count))
    try:
        with torch.no_grad():
            shape = (1, input_channels(skeleton) or 3, size, size)  # a grayscale model takes one channel
            skeleton.eval()(torch.empty(shape, device="meta", dtype=input_dtype(skeleton) or torch.float32))
    finally:
        for handle in handles:
            handle.remove()
    return Footprint(total, largest)


def fitting_batch(per_image: int, model_bytes: int, budget: int, images: int, name: str, most: int = MAX_BATCH) -> int:
    """Images per pass within ``budget``: what is left after two models (this one and the one loaded ahead) and
    the runtime, over one image's need; at least 1 (said in the log when even that may not fit), at most
    ``most``."""
    left = budget - 2 * model_bytes - RUNTIME_BYTES
    fits = left // per_image if per_image > 0 else most
    batch = int(max(1, min(fits, images, most)))
    if fits < 1:
        log.warning(
            "%s: one image needs about %s, more than memory_budget %s leaves after the model (%s, and one loaded "
            "ahead) and the runtime (%s); running 1 at a time",
            name,
            size_text(per_image),
            size_text(budget),
            size_text(model_bytes),
            size_text(RUNTIME_BYTES),
        )
    return batch


def size_text(count: int | float) -> str:
    """Bytes as a person reads them: 1.2 GB, 35 MB, 1 KB (never a misleading 0.0 GB)."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(count) >= scale or unit == "KB":
            value = count / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{count} B"


def model_footprint(mp) -> tuple[Footprint, int]:
    """One image's footprint through a planned model, and the bytes of its parameters and buffers (meta device)."""
    from pipeline.models.registry import meta_skeleton, preprocessing

    if mp.custom is not None and mp.custom.given:  # a module handed over: a meta copy of it (no memory, no change)
        module = mp.custom.build()
        tensors = [*module.parameters(), *module.buffers()]
        memo = {id(t): _on_meta(t) for t in tensors}
        skeleton = copy.deepcopy(module, memo)
        crop = getattr(mp.custom.transform, "crop_size", None)
        size = int(crop[0]) if crop else 224
    elif mp.custom is not None:
        with torch.device("meta"):
            skeleton = mp.custom.build()
        crop = getattr(mp.custom.transform, "crop_size", None)
        size = int(crop[0]) if crop else 224
    else:
        skeleton = meta_skeleton(mp.name, **mp.kwargs)
        size = preprocessing(mp.name, mp.weights, skeleton).crop_size[0]
    tensors = [*skeleton.parameters(), *skeleton.buffers()]
    return footprint(skeleton, size), sum(t.numel() * t.element_size() for t in tensors)


def _on_meta(t: torch.Tensor) -> torch.Tensor:
    meta = t.detach().to("meta")
    return nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta


def auto_batch(mp, budget: int | float, device: str, keeps_graph: bool, images: int, fallback: int = 4) -> int:
    """``batch_size: auto`` for one planned model (``fallback`` when its skeleton cannot run on the meta device)."""
    try:
        found, weights = model_footprint(mp)
    except Exception as exc:  # noqa: BLE001 - a user's model that cannot run on meta: a safe, fixed size
        log.warning("%s: batch size not estimated (%s); %d images per pass", mp.name, exc, fallback)
        return max(1, min(fallback, images))
    per_image = found.per_image(keeps_graph)
    limit = budget_bytes(budget, device)
    batch = fitting_batch(per_image, weights, limit, images, mp.name)
    log.info(
        "%s: %d image(s) per pass (about %.2f GB each%s, memory_budget %.1f GB)",
        mp.name,
        batch,
        per_image / 2**30,
        " with its autograd graph" if keeps_graph else "",
        limit / 2**30,
    )
    return batch


def optimising_batch(mp, budget: int | float, device: str, most: int, fallback: int = 16) -> int:
    """Inputs per differentiable forward of the whole model within ``budget``, at most ``most``: the bound on the
    batch of a method that optimises its own inputs (``feature_viz``); ``fallback`` when the model cannot run on the
    meta device. A truncated forward holds less, so the bound is safe for every layer."""
    try:
        found, weights = model_footprint(mp)
    except Exception:  # noqa: BLE001 - a user's model that cannot run on meta: a safe, fixed size
        return max(1, min(fallback, most))
    return fitting_batch(found.per_image(True), weights, budget_bytes(budget, device), most, mp.name, most=most)


def inference_chunk(mp, budget: int | float, device: str, fallback: int = 16) -> int:
    """Inputs per inference forward within ``budget``, for methods that score many perturbed copies of an image
    (at most ``MAX_BATCH``; ``fallback`` when the model cannot run on the meta device)."""
    try:
        found, weights = model_footprint(mp)
    except Exception:  # noqa: BLE001 - a user's model that cannot run on meta: a safe, fixed size
        return fallback
    left = budget_bytes(budget, device) - 2 * weights - RUNTIME_BYTES
    per_input = found.per_image(False)
    return int(max(1, min(MAX_BATCH, left // per_input if per_input > 0 else MAX_BATCH)))
