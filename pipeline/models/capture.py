"""Run a model once and hand each requested layer's output to a callback, stopping after the deepest one.

Hooks live only inside the ``with`` block and are removed even when the forward raises, so the model
object is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import torch
from torch import nn


class _Done(Exception):
    """Raised from a hook to end a forward pass early once every wanted layer has been seen."""


@contextmanager
def layer_hooks(model: nn.Module, names: list[str], on_output: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Call ``on_output(name, output)`` as each named submodule runs; hooks are always released."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(_hook(name, on_output)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hook(name: str, on_output: Callable[[str, torch.Tensor], None]):
    def hook(_module, _inputs, output):
        on_output(name, output)

    return hook


def run_capturing(
    model: nn.Module,
    x: torch.Tensor,
    names: list[str],
    on_output: Callable[[str, torch.Tensor], None],
    full: bool = False,
) -> torch.Tensor | None:
    """Forward ``x``, reporting each named layer once; return logits when ``full``, else stop at the deepest.

    Raises RuntimeError naming the layers that never ran (e.g. heads unused in eval mode).
    """
    pending = set(names)

    def collect(name: str, output: torch.Tensor) -> None:
        if name not in pending:
            return
        pending.discard(name)
        on_output(name, output)
        if not pending and not full:
            raise _Done

    logits = None
    with layer_hooks(model, names, collect), suppress(_Done):
        logits = model(x)
    if pending:
        raise RuntimeError(f"layer(s) never ran in the forward pass: {', '.join(sorted(pending))}")
    return logits
