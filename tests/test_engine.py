"""The sweep's model pipeline: each model loaded once, in order, the next one while the current one works."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from pipeline.engine import sweep as engine
from pipeline.models import load_model, resolve_weights
from pipeline.plan import ModelPlan


def _plans(*names: str) -> list[ModelPlan]:
    return [ModelPlan(name, resolve_weights(name, "none", seed=0), []) for name in names]


def test_the_next_model_loads_while_the_current_one_is_worked_on(monkeypatch):
    started = {name: threading.Event() for name in ("a", "b", "c")}
    calls = []

    def fake_load(name, choice, device, cache_bytes, kwargs):
        calls.append((name, threading.current_thread() is threading.main_thread()))
        started[name].set()
        if name == "b":
            raise RuntimeError("b cannot load")
        return f"model {name}"

    monkeypatch.setattr(engine, "load_model", fake_load)
    settings = SimpleNamespace(device="cpu", model_cache=0)
    plans = [ModelPlan(n, None, []) for n in ("a", "b", "c")]
    seen = []
    for mp, pending in engine.loaded_ahead(plans, settings):
        # while this model is being worked on, the following one's load has already begun
        following = {"a": "b", "b": "c"}.get(mp.name)
        if following:
            assert started[following].wait(timeout=30), f"{following} was not loaded ahead"
        try:
            seen.append((mp.name, pending.result()))
        except RuntimeError as exc:
            seen.append((mp.name, str(exc)))
    assert seen == [("a", "model a"), ("b", "b cannot load"), ("c", "model c")]  # a failure stays its own
    assert calls == [("a", False), ("b", False), ("c", False)]  # once each, in plan order, off the main thread


def test_a_model_loaded_ahead_equals_a_plain_seeded_load():
    plans = _plans("alexnet", "resnet18")
    settings = SimpleNamespace(device="cpu", model_cache=0)
    loaded = {mp.name: pending.result() for mp, pending in engine.loaded_ahead(plans, settings)}
    for name in ("alexnet", "resnet18"):
        plain = load_model(name, resolve_weights(name, "none", seed=0))
        for (key, a), b in zip(
            loaded[name].module.state_dict().items(), plain.module.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), f"{name}.{key} differs from a plain seeded load"


@pytest.mark.parametrize("names", [(), ("alexnet",)])
def test_short_sweeps(names):
    settings = SimpleNamespace(device="cpu", model_cache=0)
    assert [mp.name for mp, _ in engine.loaded_ahead(_plans(*names), settings)] == list(names)
