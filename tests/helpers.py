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
