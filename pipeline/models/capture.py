"""Run a model once and hand each requested layer's output to a callback, stopping after the deepest one.

Hooks live only inside the ``with`` block and are removed even when the forward raises, so the model
object is left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress

import torch
from torch import nn

from pipeline.errors import UserError

LOGIT_KEYS = ("logits", "out")  # what a model returning a dict most often calls its class scores


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

    output = None
    with layer_hooks(model, names, collect), suppress(_Done):
        output = model(x)
    if pending:
        raise RuntimeError(f"layer(s) never ran in the forward pass: {', '.join(sorted(pending))}")
    return None if output is None else logits_of(output)


def logits_of(output: object) -> torch.Tensor:
    """The class scores [N, classes] in what a forward returned: a tensor; a tuple or list's first tensor (as
    torchvision's GoogLeNetOutputs and InceptionOutputs hold ``logits`` first); a dict's ``logits`` or ``out``,
    or its only tensor. Anything else is a UserError in one line."""
    if isinstance(output, torch.Tensor):
        return output
    found = output
    if isinstance(output, (tuple, list)):
        found = next((item for item in output if isinstance(item, torch.Tensor)), None)
    elif isinstance(output, Mapping):
        tensors = {str(k): v for k, v in output.items() if isinstance(v, torch.Tensor)}
        key = next((k for k in LOGIT_KEYS if k in tensors), None)
        found = tensors[key] if key else next(iter(tensors.values())) if len(tensors) == 1 else None
        if found is None:
            raise UserError(
                f"the model's forward returned a dict with keys {sorted(map(str, output))}; name its class scores "
                f"{' or '.join(LOGIT_KEYS)} (or return them as a tensor)."
            )
    if not isinstance(found, torch.Tensor):
        raise UserError(f"the model's forward returned {type(output).__name__}, not a tensor of class scores.")
    return found
