"""The compute floor of the standard sweep, and the product's own compute path without rendering.

``compute_floor`` is the least arithmetic the sweep needs, written plainly with torch: per model one forward
with gradients to the deepest selected conv layer for the whole image batch, then per layer the backward of
every image's top-k channel targets under the guided-ReLU rule, the top-64 feature-map selection, and a read of
each layer's first 64 filters. The k targets of a layer go back either as one ``is_grads_batched`` call
(``vmap``) or as k ordinary calls each batched over the images (``loop``): the same arithmetic, and on CPU the
loop is usually the faster. ``channels_last=True`` runs the same arithmetic with model and input in NHWC memory
layout (a diagnostic of what the layout alone is worth). Model construction and image decoding are timed apart,
not part of the floor.

``product_compute`` runs the same work through the product's own pure-tensor code (``pipeline.methods``:
``filters``, ``feature_maps``, ``Session``), still with no rendering or I/O, so that the difference between the
two is the cost of the product's generic machinery (TorchFunctionMode interception, per-target Python loops).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.models import get_model, get_model_weights


class _GuidedReLUFn(torch.autograd.Function):
    """ReLU forward; backward passes only positive gradient where the input was positive."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0] > 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        return (grad * mask).clamp_min(0)


class GuidedReLU(nn.Module):
    """Drop-in replacement for ``nn.ReLU`` with the guided backward rule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GuidedReLUFn.apply(x)


def swap_relus(module: nn.Module) -> int:
    """Replace every ``nn.ReLU`` child (recursively) by ``GuidedReLU``; return how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, GuidedReLU())
            count += 1
        else:
            count += swap_relus(child)
    return count


class _Stop(Exception):
    """Ends a forward pass once the deepest wanted layer has run."""


def conv_names(model: nn.Module) -> list[str]:
    """Dotted names of every ``nn.Conv2d``, in ``named_modules()`` order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def pick_layers(names: list[str], layers: str | tuple) -> list[str]:
    """``all``, or a tuple of ``first``/``last``/integer indices, resolved against ``names`` in model order."""
    if layers == "all":
        return list(names)
    wanted = set()
    for item in layers:
        index = 0 if item == "first" else -1 if item == "last" else int(item)
        wanted.add(index % len(names))
    return [names[i] for i in sorted(wanted)]


def _build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return get_model(name, weights=None).eval().requires_grad_(False)


def _batch(name: str, photos: list[Path]) -> torch.Tensor:
    transform = get_model_weights(name).DEFAULT.transforms()
    return torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])


def _forward_to(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """One forward with gradients, keeping ``layers``' outputs and stopping after the last of them."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    last = layers[-1]

    def keep(name: str):
        def hook(_module, _inputs, output):
            outputs[name] = output
            if name == last:
                raise _Stop

        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layers]
    try:
        with torch.enable_grad():
            model(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _max_unit_grad_outputs(activation: torch.Tensor, top_k: int) -> torch.Tensor:
    """Batched grad_outputs [k, N, C, H, W]: a one at each image's top-k channels' most active unit."""
    act = activation.detach()
    n, c, h, w = act.shape
    peak, where = act.flatten(2).max(dim=2)  # [N, C]
    k = min(top_k, c)
    chosen = peak.topk(k, dim=1).indices  # [N, k]
    flat_index = chosen * (h * w) + where.gather(1, chosen)  # [N, k] into C*H*W
    grad_out = torch.zeros((k, n, c * h * w), dtype=act.dtype)
    grad_out.scatter_(2, flat_index.t().unsqueeze(2), 1.0)
    return grad_out.view(k, n, c, h, w)


def _backward(act: torch.Tensor, x: torch.Tensor, grad_out: torch.Tensor, retain: bool, strategy: str) -> torch.Tensor:
    """Input gradients [k, N, 3, H, W] for grad_outputs [k, N, ...], by ``vmap`` or a ``loop`` over k."""
    if strategy == "vmap":
        return torch.autograd.grad(act, x, grad_out, retain_graph=retain, is_grads_batched=True)[0]
    k = grad_out.shape[0]
    return torch.stack(
        [torch.autograd.grad(act, x, grad_out[j], retain_graph=retain or j < k - 1)[0] for j in range(k)]
    )


def compute_floor(
    models: list[str],
    photos: list[Path],
    layers: str | tuple = "all",
    top_maps: int = 64,
    top_k: int = 8,
    strategy: str = "loop",
    channels_last: bool = False,
) -> dict:
    """Time the minimum forward/backward arithmetic of a filters + feature-maps + guided-backprop sweep."""
    if strategy not in ("loop", "vmap"):
        raise ValueError(f"strategy must be loop or vmap, got {strategy!r}")
    compute = build = 0.0
    forwards = backwards = 0
    for name in models:
        started = time.perf_counter()
        model = _build(name, 0)
        swap_relus(model)
        x = _batch(name, photos)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        build += time.perf_counter() - started
        modules = dict(model.named_modules())
        chosen = pick_layers(conv_names(model), layers)

        started = time.perf_counter()
        for layer in chosen:
            modules[layer].weight[:top_maps].detach().float().cpu().clone()
        x = x.detach().requires_grad_(True)
        outputs = _forward_to(model, x, chosen)
        forwards += 1
        for i, layer in enumerate(chosen):
            act = outputs.pop(layer)
            scores = act.detach().flatten(2).mean(2)  # [N, C]
            index = scores.topk(min(top_maps, act.shape[1]), dim=1).indices
            for j in range(act.shape[0]):
                act[j].detach().index_select(0, index[j]).float().cpu()
            grad_out = _max_unit_grad_outputs(act, top_k)
            grads = _backward(act, x, grad_out, i < len(chosen) - 1, strategy)
            grads.transpose(0, 1).float().cpu()
            backwards += 1
        compute += time.perf_counter() - started
        del outputs, x, model
    return {
        "seconds": compute,
        "build_seconds": build,
        "forwards": forwards,
        "layer_backwards": backwards,
        "strategy": strategy,
        "channels_last": channels_last,
    }


def product_compute(models: list[str], photos: list[Path], layers: str | tuple = "all", top_k: int = 8) -> dict:
    """The same work through the product's own method code (no rendering, no files); build time apart."""
    from pipeline.engine.shared import GraphSession
    from pipeline.methods.backprop import TargetSpec, channel_targets
    from pipeline.methods.feature_maps import feature_maps
    from pipeline.methods.filters import filters
    from pipeline.models.registry import load_model, resolve_weights

    compute = build = 0.0
    backwards = 0
    spec = TargetSpec(target="channel", top_k=top_k, objective="max")
    for name in models:
        started = time.perf_counter()
        loaded = load_model(name, resolve_weights(name, "none", 0), "cpu")
        x = torch.stack([loaded.transform(Image.open(p).convert("RGB")) for p in photos])
        build += time.perf_counter() - started
        modules = dict(loaded.module.named_modules())
        chosen = pick_layers(conv_names(loaded.module), layers)

        started = time.perf_counter()
        for layer in chosen:
            filters(modules[layer].weight)
        with GraphSession(loaded.module, x, chosen) as session:
            for layer in chosen:
                act = session.activations[layer]
                for i in range(act.shape[0]):
                    feature_maps(act[i], 64)
                _, grad_out = channel_targets(act, spec)
                session.input_grads("guided", act, grad_out)
                backwards += 1
                session.release(layer)
        compute += time.perf_counter() - started
        del loaded, x
    return {"seconds": compute, "build_seconds": build, "forwards": len(models), "layer_backwards": backwards}
