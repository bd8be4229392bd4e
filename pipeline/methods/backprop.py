"""``gradient``, ``deconvnet`` and ``guided_backprop``: input-space signals for channel or class targets.

One forward pass with gradients (truncated at the deepest requested layer unless a class target needs the
logits) feeds every (layer, method): its targets are backpropagated for all images of the batch at once, with
no further forward pass. Pure tensor code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from pipeline.methods._rules import ACTIVATION_POLICY, RuleBox, backward_rules
from pipeline.models.capture import run_capturing

METHOD_RULES = {"gradient": "gradient", "deconvnet": "deconvnet", "guided_backprop": "guided"}
TARGETS = ("channel", "class")
OBJECTIVES = ("max", "sum")
# How the k targets of a layer are backpropagated after the shared forward: ``loop`` runs k backward calls,
# each batched over the images; ``vmap`` runs one ``is_grads_batched`` call. Measured on CPU, ``loop`` was as
# fast on vgg16 and 2-25x faster on resnet18 and efficientnet_lite0 (vmap's batching rules for depthwise and
# strided convolution backward are slow), so it is the default.
STRATEGIES = ("loop", "vmap")
__all__ = ["ACTIVATION_POLICY", "METHOD_RULES", "Session", "Target", "TargetSpec", "backprop", "channel_targets"]


@dataclass(frozen=True)
class TargetSpec:
    """What to backpropagate from: channels of a layer (``max`` unit or ``sum``), or a class logit."""

    target: str = "channel"
    top_k: int = 8
    channels: tuple[int, ...] | None = None
    objective: str = "max"
    class_index: int | None = None

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")


@dataclass
class Target:
    """One backpropagated unit: a channel (with its unit for ``max``) or a class, and its forward value."""

    value: float
    channel: int | None = None
    objective: str | None = None
    unit: tuple[int, int] | None = None
    class_index: int | None = None

    def as_dict(self) -> dict:
        if self.class_index is not None:
            return {"class_index": self.class_index, "value": self.value}
        return {
            "channel": self.channel,
            "objective": self.objective,
            "unit": list(self.unit) if self.unit else None,
            "value": self.value,
        }


@dataclass
class Gradients:
    """Per image: its targets and the input gradients [targets, 3, H, W] they produced."""

    layer: str | None  # None for class targets
    method: str
    targets: list[list[Target]] = field(default_factory=list)
    grads: list[torch.Tensor] = field(default_factory=list)


def channel_targets(activation: torch.Tensor, spec: TargetSpec) -> tuple[list[list[Target]], torch.Tensor]:
    """Targets for activation [N, C, H, W] and the matching batched grad_outputs [k, N, C, H, W].

    Channels are the explicit list or each image's ``top_k`` by maximum activation; the objective is the
    channel's single most active unit (``max``, as in Springenberg et al.) or its sum.
    """
    act = activation.detach()
    n, c, h, w = act.shape
    peak, where = act.flatten(2).max(dim=2)  # [N, C]
    if spec.channels:
        bad = [ch for ch in spec.channels if not -c <= int(ch) < c]
        if bad:
            raise ValueError(f"channels {bad} out of range for a layer with {c} channels")
        chosen = torch.tensor([[int(ch) % c for ch in spec.channels]] * n, device=act.device)
    else:
        k = min(spec.top_k, c) if spec.top_k and spec.top_k > 0 else c
        chosen = torch.topk(peak, k, dim=1, sorted=True).indices  # [N, k]
    k = chosen.shape[1]
    grad_out = torch.zeros((k, n, c, h * w), dtype=act.dtype, device=act.device)
    targets: list[list[Target]] = []
    for i in range(n):
        row = []
        for j, ch in enumerate(chosen[i].tolist()):
            if spec.objective == "max":
                pos = int(where[i, ch])
                grad_out[j, i, ch, pos] = 1
                row.append(Target(float(peak[i, ch]), channel=ch, objective="max", unit=(pos // w, pos % w)))
            else:
                grad_out[j, i, ch] = 1
                row.append(Target(float(act[i, ch].sum()), channel=ch, objective="sum"))
        targets.append(row)
    return targets, grad_out.view(k, n, c, h, w)


def class_targets(logits: torch.Tensor, spec: TargetSpec) -> tuple[list[list[Target]], torch.Tensor]:
    """One class target per image (its top-1 class or ``class_index``) and grad_outputs [1, N, classes]."""
    logits = logits.detach()
    n, classes = logits.shape
    index = [spec.class_index] * n if spec.class_index is not None else logits.argmax(1).tolist()
    if any(not 0 <= i < classes for i in index):
        raise ValueError(f"class_index {spec.class_index} out of range for {classes} classes")
    grad_out = torch.zeros((1, n, classes), dtype=logits.dtype, device=logits.device)
    for i, cls in enumerate(index):
        grad_out[0, i, cls] = 1
    return [[Target(float(logits[i, cls]), class_index=cls)] for i, cls in enumerate(index)], grad_out


class Session:
    """One forward pass with gradients whose captured layers and logits serve any number of batched backwards.

    Use as a context manager; leaving it drops the graph. ``activations`` (graph attached) and ``logits``
    (None when the forward stopped at the deepest layer) may also be read directly, e.g. for feature maps.
    """

    def __init__(
        self, model: nn.Module, x: torch.Tensor, layers: list[str], full: bool = False, strategy: str = "loop"
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"backward strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self.box = RuleBox()
        self.x = x.detach().requires_grad_(True)
        self.activations: dict[str, torch.Tensor] = {}
        with torch.enable_grad(), backward_rules(self.box):
            self.logits = run_capturing(model, self.x, list(dict.fromkeys(layers)), self.activations.__setitem__, full)

    def gradients(self, method: str, spec: TargetSpec, layer: str | None = None) -> Gradients:
        """Input gradients of ``method`` for ``spec``'s targets at ``layer`` (or for the class logits)."""
        if spec.target == "class":
            if self.logits is None:
                raise ValueError("class targets need a session opened with full=True")
            output, layer = self.logits, None
            targets, grad_out = class_targets(output, spec)
        else:
            output = self.activations[layer]
            targets, grad_out = channel_targets(output, spec)
        self.box.rule = METHOD_RULES[method]
        if self.strategy == "vmap":
            (grads,) = torch.autograd.grad(output, self.x, grad_out, retain_graph=True, is_grads_batched=True)
        else:  # one backward per target rank, each batched over the images
            grads = torch.stack([torch.autograd.grad(output, self.x, g, retain_graph=True)[0] for g in grad_out])
        per_image = grads.detach().transpose(0, 1).float().cpu()  # [N, k, 3, H, W]
        return Gradients(layer=layer, method=method, targets=targets, grads=list(per_image))

    def release(self, layer: str) -> None:
        """Forget a layer's activation once its backwards are done."""
        self.activations.pop(layer, None)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.activations.clear()
        self.logits = None


def backprop(
    model: nn.Module, x: torch.Tensor, layers: list[str], requests: dict[str, TargetSpec]
) -> Iterator[Gradients]:
    """Yield input gradients for every (layer, method) in ``requests`` (class targets once, with layer None).

    ``requests`` maps method names (keys of METHOD_RULES) to their TargetSpec. The model is not modified.
    """
    unknown = set(requests) - set(METHOD_RULES)
    if unknown:
        raise ValueError(f"unknown backprop method(s): {sorted(unknown)}")
    channel_methods = [m for m, spec in requests.items() if spec.target == "channel"]
    names = list(dict.fromkeys(layers)) if channel_methods else []
    full = any(spec.target == "class" for spec in requests.values())
    with Session(model, x, names, full) as session:
        for name in names:
            for method in channel_methods:
                yield session.gradients(method, requests[method], name)
            session.release(name)
        for method, spec in requests.items():
            if spec.target == "class":
                yield session.gradients(method, spec)
