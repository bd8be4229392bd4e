"""Helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os

import torch


def fingerprint(model: torch.nn.Module) -> list:
    """What a method must never change: module types, inplace flags, hooks, parameter identity and version."""
    rows = []
    for name, module in model.named_modules():
        hooks = tuple(
            len(getattr(module, attr, {}))
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
        )
        rows.append((name, type(module).__name__, getattr(module, "inplace", None), hooks, module.training))
    for name, param in model.named_parameters():
        rows.append((name, param.data_ptr(), param._version, param.requires_grad))
    globals_ = torch.nn.modules.module
    rows.append((len(globals_._global_forward_hooks), len(globals_._global_backward_hooks)))
    rows.append(torch._C._len_torch_function_stack())
    return rows


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_methods(model, x, layer_names, methods: dict, strategy: str = "loop", info=None):
    """Run methods (name -> parameter dict) on ``model`` for batch ``x`` through the engine's own shared pass;
    return {(method, layer or None): [Output per image]}."""
    from pipeline.engine.work import run_methods as engine_run
    from pipeline.methods import method_class
    from pipeline.methods.base import ModelInfo
    from pipeline.methods.params import parse_params
    from pipeline.models.layers import conv_layers

    by_name = {layer.name: layer for layer in conv_layers(model)}
    layers = [by_name[name] for name in dict.fromkeys(layer_names)]
    chosen = [
        method_class(name)(parse_params(method_class(name).Params, params, name)) for name, params in methods.items()
    ]
    info = info or ModelInfo("test", (), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None)
    found: dict = {}
    for method, output in engine_run(model, x, layers, chosen, info, strategy=strategy):
        found.setdefault((method.name, output.layer), []).append(output)
    return found
