"""The method interface: a method is one file, the engine and config never name one, defaults live in the Params
dataclass, one forward serves every layer and method, and a user's own method runs end to end."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from helpers import run_methods
from omegaconf import OmegaConf
from torch import nn

from pipeline.methods import registry
from pipeline.methods.base import Method, Scope

PIPELINE = ROOT / "pipeline"


def test_every_registered_method_is_a_complete_plugin():
    for name in registry.names():
        cls = registry.method_class(name)
        assert issubclass(cls, Method) and cls.name == name
        params = cls.Params()
        assert dataclasses.is_dataclass(params)
        with pytest.raises(dataclasses.FrozenInstanceError):
            params.tile_px = 1  # frozen: parameters cannot drift during a run
        assert isinstance(cls(params).scope, Scope)
        hooks = ("for_layer", "for_layer_batch", "for_batch", "finish")
        assert any(getattr(cls, h) is not getattr(Method, h) for h in hooks), f"{name} implements no hook"


def test_method_defaults_come_from_the_params_dataclass_alone(compose_cfg):
    cfg = compose_cfg()
    for name in registry.names():
        method = registry.method_class(name)
        if name not in cfg:  # a test's plug-in registered earlier in this session; every built-in must be there
            assert not method.__module__.startswith("pipeline."), name
            continue
        defaults = dataclasses.asdict(method.Params())
        composed = OmegaConf.to_container(cfg[name])
        assert composed == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}, name
    assert not (ROOT / "conf" / "method").exists()  # no second copy of the defaults


def _source_strings(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)}


@pytest.mark.parametrize(
    "path", [*sorted((PIPELINE / "engine").glob("*.py")), PIPELINE / "plan.py", PIPELINE / "config.py"]
)
def test_engine_plan_and_config_name_no_method(path):
    named = _source_strings(path) & set(registry.names())
    assert not named, f"{path.name} names methods {named}"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline"))
    return found


def test_pipeline_imports_have_no_cycles():
    modules = {}
    for path in PIPELINE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules is not a cycle between layers; drop package -> child edges
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.features(x))


def test_one_forward_serves_every_layer_and_method():
    torch.manual_seed(0)
    model = Net().eval()
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        methods = {
            "feature_maps": {"top_k": 2},
            "guided_backprop": {"top_k": 2},
            "gradient": {"target": "class"},
            "deconvnet": {"top_k": 1},
        }
        found = run_methods(model, torch.randn(3, 3, 16, 16), ["features.0", "features.2"], methods)
    finally:
        handle.remove()
    assert calls == [3], "one forward for the whole batch, every layer and every method"
    assert len(found) == 2 * 3 + 1 and all(len(outs) == 3 for outs in found.values())


def test_a_users_method_runs_end_to_end_from_the_cli(tmp_path, photo_dir):
    out = tmp_path / "run"
    proc = run_cli(
        [
            "models=[alexnet]",
            "weights=none",
            "layers=[first,last]",
            f"images=[{photo_dir}]",
            "plugins=[tests.toy_method]",
            "methods=[toy_energy,feature_maps]",
            "+toy_energy.power=2",
            "save_raw=true",
            "predictions=false",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    toy = [r for r in lines if r["method"] == "toy_energy"]
    assert len(toy) == 2 * 2 and all(r["status"] == "ok" and r["power"] == 2 for r in toy)
    # the raw array equals an independent computation: the conv output captured by a plain hook, squared, summed
    from pipeline.images import load_image
    from pipeline.models import load_model, resolve_weights

    loaded = load_model("alexnet", resolve_weights("alexnet", "none", seed=0))
    record = next(r for r in toy if r["layer"] == "features.0" and r["image_label"] == "synthetic_1")
    seen = {}

    def keep(module, inputs, output):  # a copy now: the in-place ReLU that follows overwrites the output
        seen["o"] = output.clone()

    handle = loaded.module.features[0].register_forward_hook(keep)
    with torch.no_grad():
        loaded.module(loaded.transform(load_image(Path(record["image"])))[None])
    handle.remove()
    expected = seen["o"][0].pow(2).sum(0).numpy()
    np.testing.assert_allclose(np.load(out / record["raw"]), expected, rtol=1e-5, atol=1e-5)
    assert (out / record["png"]).is_file()
