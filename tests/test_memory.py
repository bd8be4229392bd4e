"""batch_size: auto sizes batches to memory_budget from a meta-device estimate; a batch that runs out of memory is
split and retried, and the run goes on."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from pipeline import visualize
from pipeline.engine import memory
from pipeline.engine.work import BatchWork
from pipeline.models.registry import meta_skeleton, resolve_weights
from pipeline.plan import ModelPlan


def real_sums(model: nn.Module, size: int) -> tuple[int, int]:
    """Sum and largest of every leaf module's output bytes for one real image (plain hooks, no meta device)."""
    sizes = []
    handles = [
        m.register_forward_hook(lambda mod, a, o: sizes.append(o.numel() * o.element_size()) or None)
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return sum(sizes), max(sizes)


def test_the_meta_footprint_is_what_a_real_forward_makes():
    torch.manual_seed(0)
    real = torchvision.models.resnet18()
    found = memory.footprint(meta_skeleton("resnet18"), 96)
    assert (found.total, found.largest) == real_sums(real, 96)
    assert found.per_image(keeps_graph=True) == int(found.total * memory.GRAPH_FACTOR)
    assert found.per_image(keeps_graph=False) == int(found.largest * memory.STREAM_FACTOR)


def test_auto_batches_fit_the_budget_on_a_mid_size_model():
    mp = ModelPlan("resnet50", resolve_weights("resnet50", "none"), [])
    total, _ = real_sums(torchvision.models.resnet50(), 224)
    weights = sum(p.numel() * 4 for p in torchvision.models.resnet50().state_dict().values() if p.is_floating_point())
    per_image = int(total * memory.GRAPH_FACTOR)
    for images in (2, 5):
        for budget in (1 * 2**30, 2 * 2**30, 3 * 2**30):
            expected = max(1, min(images, (budget - 2 * weights - memory.RUNTIME_BYTES) // per_image))
            assert memory.auto_batch(mp, budget, "cpu", True, images) == expected
    batches = [memory.auto_batch(mp, b * 2**30, "cpu", True, 64) for b in (1, 2, 4, 8)]
    assert batches == sorted(batches) and batches[0] >= 1 and batches[-1] > batches[0]
    # without a graph (feature maps only) far more fit
    assert memory.auto_batch(mp, 2 * 2**30, "cpu", False, 64) > memory.auto_batch(mp, 2 * 2**30, "cpu", True, 64)
    assert memory.budget_bytes(0.5, "cpu") == memory.total_memory("cpu") // 2


def test_a_batch_that_runs_out_of_memory_is_split_and_retried(monkeypatch, photo_dir, caplog, tmp_path):
    original = BatchWork.run
    sizes = []

    def tight(self, batch):  # as if two images did not fit, but one does
        sizes.append(batch.x.shape[0])
        if batch.x.shape[0] > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9999999 bytes")
        return original(self, batch)

    args = dict(layers=["first", "last"], weights="none", images=photo_dir, methods=["feature_maps", "guided_backprop"])
    alone = {
        (a.record["method"], a.record["layer"], a.record["image_label"]): a.array
        for a in visualize("alexnet", batch_size=1, **args)
    }
    monkeypatch.setattr(BatchWork, "run", tight)
    with caplog.at_level(logging.WARNING, logger="pipeline.engine"):
        split = list(visualize("alexnet", batch_size=2, out=tmp_path / "run", **args))
    assert sizes == [2, 1, 1]
    assert "a batch of 2 images ran out of memory; running it as 1 + 1" in caplog.text
    assert len(split) == len(alone) == 8 and all(a.ok for a in split)
    for a in split:
        np.testing.assert_array_equal(a.array, alone[(a.record["method"], a.record["layer"], a.record["image_label"])])


def test_one_image_that_does_not_fit_fails_its_artefacts_and_the_run_goes_on(monkeypatch, photo_dir):
    def never(self, batch):
        raise MemoryError()

    monkeypatch.setattr(BatchWork, "run", never)
    found = list(
        visualize("alexnet", layers="first", weights="none", images=photo_dir, methods=["filters", "feature_maps"])
    )
    assert [a.ok for a in found if a.record["method"] == "filters"] == [True]
    maps = [a for a in found if a.record["method"] == "feature_maps"]
    assert len(maps) == 2 and not any(a.ok for a in maps) and "MemoryError" in maps[0].record["error"]


@pytest.mark.parametrize("value", ["auto", 3])
def test_batch_size_setting(compose_cfg, value):
    from pipeline.config import settings_from

    settings = settings_from(compose_cfg([f"batch_size={value}", "memory_budget=8GB"]))
    assert settings.batch_size == value and settings.memory_budget == 8 * 2**30


def test_the_engine_bounds_an_optimised_batch_by_memory_budget():
    """The bound is the auto batch's estimate (a forward with its graph) without the cap of 64: more memory, more
    inputs, and at least one."""
    mp = ModelPlan("resnet18", resolve_weights("resnet18", "none"), [])
    small, large = (memory.optimising_batch(mp, b * 2**30, "cpu", 100000) for b in (2, 64))
    found, weights = memory.model_footprint(mp)
    expected = (64 * 2**30 - 2 * weights - memory.RUNTIME_BYTES) // found.per_image(True)
    assert 1 <= small < large == expected > memory.MAX_BATCH
    assert memory.optimising_batch(mp, 64 * 2**30, "cpu", 7) == 7
