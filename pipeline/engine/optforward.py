"""The forward that methods optimising their own inputs run at every step: a copy of the model made for input
gradients only, so thousands of steps cost less and the user's model is never touched.

The copy shares the model's weights (frozen aliases, no weight gradient is ever built), folds each BatchNorm in eval
mode into the conv just before it in the same ``nn.Sequential`` (except at the convs whose own output is read, which
stay as they are), runs activations out of place, and on a CPU keeps conv weights channels_last, where oneDNN's
depthwise convolutions and their backward are much cheaper. Folding changes values only by float rounding.
"""

from __future__ import annotations

import copy
import ctypes
import itertools
import logging
import sys

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)
KEEP_FREED = (1 << 31) - 1  # bytes: glibc keeps freed blocks up to this size instead of unmapping them
NEW_WEIGHTS = 512 << 20  # bytes of new (folded or channels_last) weights a copy may hold; the rest stays shared


def replica(
    module: nn.Module, read: set[str], channels_last: bool, fold: bool = True, budget: int = NEW_WEIGHTS
) -> nn.Module:
    """A frozen copy of ``module`` that shares its weights; BatchNorms folded into the preceding conv (``fold``)
    except after the convs named in ``read``; conv weights channels_last when asked; at most ``budget`` bytes of
    new weights, spent in module order (the first layers, at the highest resolution, gain most). The model itself
    is left alone."""
    memo: dict[int, object] = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in module.parameters()}
    memo.update((id(b), b.detach()) for b in module.buffers())
    net = copy.deepcopy(module, memo)
    names = {id(m): name for name, m in net.named_modules()}
    left = [budget]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if fold:
        for parent in list(net.modules()):
            if isinstance(parent, nn.Sequential):
                _fold_children(parent, read, names, left, layout)
    for module in net.modules():
        if getattr(module, "inplace", None) is True:
            module.inplace = False  # an in-place activation clones its input for its backward; a new tensor is cheaper
    for conv in net.modules():
        weight = getattr(conv, "weight", None)
        moved = isinstance(conv, nn.Conv2d) and not weight.is_contiguous(memory_format=layout)
        if moved and _spend(left, weight):
            conv.weight = nn.Parameter(weight.contiguous(memory_format=layout), False)
    return net


def _spend(left: list[int], weight: torch.Tensor) -> bool:
    """Take a copy of ``weight`` out of the budget ``left[0]``; False when it does not fit."""
    cost = weight.numel() * weight.element_size()
    if cost > left[0]:
        return False
    left[0] -= cost
    return True


def _fold_children(
    parent: nn.Sequential, read: set[str], names: dict[int, str], left: list[int], layout: torch.memory_format
) -> None:
    """Fold each eval BatchNorm2d into the Conv2d right before it in ``parent`` (the BatchNorm becomes Identity)."""
    children = list(parent._modules.items())
    for (_, conv), (bn_key, bn) in itertools.pairwise(children):
        if not (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d)) or names.get(id(conv)) in read:
            continue
        if conv.training or bn.training or bn.running_mean is None or bn.running_var is None:
            continue
        if conv.out_channels != bn.num_features or _hooked(conv) or _hooked(bn) or not _spend(left, conv.weight):
            continue
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        conv.weight = nn.Parameter(w.detach().contiguous(memory_format=layout), False)
        conv.bias = nn.Parameter(b.detach(), False)
        parent._modules[bn_key] = nn.Identity()


def _hooked(module: nn.Module) -> bool:
    """Whether someone put hooks on this module (folding would skip or change what they see)."""
    return any(getattr(module, attr, None) for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"))


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks (up to 1 GiB) for reuse instead of returning them to the kernel: every step
    frees and reallocates the same large activations, and mapping them afresh costs much of the CPU time in page
    faults (``benchmarks/README.md``). Process-wide; a no-op off glibc Linux."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, KEEP_FREED)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, KEEP_FREED)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # musl or no libc.so.6: keep the allocator's defaults
        log.debug("mallopt unavailable; the allocator keeps its defaults")
