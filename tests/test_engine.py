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


def test_a_sweep_lets_each_model_go_once_it_is_done(compose_cfg, photo_dir, tmp_path, monkeypatch):
    """Memory stays bounded by the current model and the one loaded ahead, however many models a run sweeps."""
    import gc
    import weakref

    from pipeline.config import settings_from
    from pipeline.engine.model_run import ModelRun
    from pipeline.models.registry import clear_cache
    from pipeline.plan import make_plan

    clear_cache()  # a model another test left in the process-wide cache would be alive whatever the sweep does
    cfg = compose_cfg(
        [
            "models=[alexnet,squeezenet1_0,squeezenet1_1]",
            "weights=none",
            "layers=[first]",
            "methods=[feature_maps]",
            f"images=[{photo_dir}]",
            "predictions=false",
            "model_cache=0",
        ]
    )
    settings = settings_from(cfg)
    alive: list[weakref.ref] = []
    real_load, real_run = engine.load_model, ModelRun.run

    def load(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        alive.append(weakref.ref(loaded.module))
        return loaded

    held = []

    def run(self, pending):
        real_run(self, pending)
        gc.collect()
        held.append(sum(ref() is not None for ref in alive))

    monkeypatch.setattr(engine, "load_model", load)
    monkeypatch.setattr(ModelRun, "run", run)
    summary = engine.run(settings, make_plan(settings), tmp_path / "run")
    assert summary.ok == summary.planned > 0
    # as each model ends, only it (its load's future is still in the caller's hands) and the one loaded ahead are
    # alive, and the count does not grow; keeping every finished model (the bug) gives [2, 3, 3]
    assert held == [2, 2, 1]
