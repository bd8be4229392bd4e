"""``gradient``, ``deconvnet`` and ``guided_backprop``: input-space signals for channel or class targets.

The three differ only in the backward rule applied at ReLU-family activations (``_rules``). Each layer's
targets are backpropagated through the engine's shared forward for all images of the batch at once; a
class target is backpropagated from the logits once per image batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from pipeline.methods import base
from pipeline.methods._crop import cropped_label, signal_box
from pipeline.methods._rules import ACTIVATION_POLICY
from pipeline.methods.params import changed
from pipeline.methods.registry import register

TARGETS = ("channel", "class")
OBJECTIVES = ("max", "sum")


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


def channel_targets(activation: torch.Tensor, spec: TargetSpec) -> tuple[list[list[Target]], torch.Tensor]:
    """Targets for activation [N, C, H, W] and the matching batched grad_outputs [k, N, C, H, W].

    Channels are the explicit list or each image's ``top_k`` by maximum activation (0: all); the objective is
    the channel's single most active unit (``max``, as in Springenberg et al.) or its sum.
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


def class_targets(
    logits: torch.Tensor, spec: TargetSpec, explain: torch.Tensor | None = None
) -> tuple[list[list[Target]], torch.Tensor]:
    """One class target per image (``explain`` [N] when given, else its top-1 class or ``class_index``) and
    grad_outputs [1, N, classes]."""
    logits = logits.detach()
    n, classes = logits.shape
    index = [spec.class_index] * n if spec.class_index is not None else logits.argmax(1).tolist()
    if explain is not None:
        index = [int(c) for c in explain.tolist()]
    if any(not 0 <= i < classes for i in index):
        raise ValueError(f"class_index {spec.class_index} out of range for {classes} classes")
    grad_out = torch.zeros((1, n, classes), dtype=logits.dtype, device=logits.device)
    for i, cls in enumerate(index):
        grad_out[0, i, cls] = 1
    return [[Target(float(logits[i, cls]), class_index=cls)] for i, cls in enumerate(index)], grad_out


@dataclass(frozen=True)
class Params(base.SmoothingParams):
    target: Literal["channel", "class"] = "channel"
    top_k: int = field(default=8, metadata={"min": 0, "help": "channels per layer by max activation (0: all)"})
    channels: tuple[int, ...] | None = None  # or an explicit list of channel indices
    objective: Literal["max", "sum"] = "max"  # the channel's single most active unit, or its sum
    class_index: int | None = field(default=None, metadata={"min": 0})  # target=class: null = top-1 prediction
    display: Literal["signed", "positive"] = "signed"  # gray = 0, or the positive part only
    percentile: float = field(default=99.5, metadata={"above": 0, "max": 100})  # per-tile clip of |signal|
    crop: Literal["auto", "receptive", "none"] = "auto"  # objective=max tiles at the unit's receptive field
    tile_px: int = field(default=160, metadata={"min": 16, "max": 2048})

    def unused(self) -> dict[str, str]:
        moot = super().unused()
        if self.target == "class":
            return {**moot, **changed(self, "target=class", "top_k", "channels", "objective", "crop")}
        moot.update(changed(self, "target=channel", "class_index"))
        if self.objective == "sum":
            moot.update(changed(self, "objective=sum", "crop"))
        return {**moot, **changed(self, "explicit channels", "top_k")} if self.channels else moot

    def spec(self) -> TargetSpec:
        return TargetSpec(self.target, self.top_k, self.channels, self.objective, self.class_index)


class Backprop(base.Method):
    """Input gradients under one backward rule, for each layer's top channels or for a class logit."""

    rule: str = "gradient"
    Params = Params

    @property
    def scope(self) -> base.Scope:
        return base.Scope.IMAGE if self.params.target == "class" else base.Scope.LAYER_IMAGE

    @property
    def needs(self) -> base.Needs:
        if self.params.target == "class":
            return base.Needs(logits=True, gradients=True)
        return base.Needs(activations=True, gradients=True)

    def check(self, model: base.ModelInfo) -> None:
        index, classes = self.params.class_index, model.num_classes
        if self.params.target == "class" and index is not None and classes is not None and index >= classes:
            raise ValueError(f"class_index {index} is out of range for {model.name}, which has {classes} classes")

    def manifest_params(self) -> dict:
        return {**super().manifest_params(), "activation_policy": ACTIVATION_POLICY}

    def as_attribution(self) -> base.Method:
        return type(self)(dataclasses.replace(self.params, target="class", class_index=None))

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        spec = self.params.spec()
        targets, grad_out = channel_targets(view.activation, spec)
        grads = view.layer_input_grads(self.rule, grad_out, self.params.noise())
        what = f"{len(targets[0])} channels by max activation, objective {spec.objective}"
        return self._outputs(view, targets, grads, what, view.layer.name, view.layer.receptive)

    def for_batch(self, view: base.BatchView) -> list[base.Output]:
        if view.logits is None:
            raise ValueError("class targets need the logits")
        spec = self.params.spec()
        targets, grad_out = class_targets(view.logits, spec, view.explain)
        classes = grad_out.argmax(-1)  # [1, N]: each image's target class
        grads = view.class_input_grads(self.rule, classes, self.params.noise())
        what = "top-1 class" if spec.class_index is None else f"class {spec.class_index}"
        return self._outputs(view, targets, grads, what, None)

    def _outputs(
        self, view, targets, grads: torch.Tensor, what: str, layer: str | None, field_=None
    ) -> list[base.Output]:
        p = self.params
        per_image = grads.detach().transpose(0, 1).float().cpu()  # [N, k, 3, H, W]
        header = f"{what}; display {p.display} p{p.percentile}{p.smoothing_text()}"
        boxes = [[signal_box(field_, t.unit, p.crop) for t in row] for row in targets]
        if any(box is not None for row in boxes for box in row):
            header += f"; tiles cropped at the unit's {field_.text()} (crop {p.crop})"
        outputs = []
        for i, row in enumerate(targets):
            found = [t.as_dict() for t in row]
            for t in found:
                if "class_index" in t and view.model.categories:
                    t["class_name"] = view.model.categories[t["class_index"]]
            labels = [
                f"{t.get('class_name', t['class_index'])} · {t['value']:.3g}"
                if "class_index" in t
                else f"ch {t['channel']} · {t['value']:.3g}"
                for t in found
            ]
            data = per_image[i].numpy()
            tiles: list[base.Tile] = [base.ImageTile(view.sources[i], "input")]
            for g, label, box in zip(data, labels, boxes[i], strict=True):
                shown = g if box is None else g[:, box[0] : box[2], box[1] : box[3]]
                tiles.append(base.SignalTile(shown, cropped_label(label, box), p.display, p.percentile))
            fields = {"targets": found, "input_size": list(data.shape[-2:])}
            if any(box is not None for box in boxes[i]):
                fields["crops"] = [None if box is None else list(box) for box in boxes[i]]
            outputs.append(
                base.Output(
                    array=data,
                    picture=base.Picture(tiles, header, p.tile_px, p.columns, where=None if layer else "class logit"),
                    image=i,
                    layer=layer,
                    fields=fields,
                )
            )
        return outputs


@register
class Gradient(Backprop):
    """Plain backprop: R·1[f>0] at every ReLU."""

    name = "gradient"
    order = 30
    rule = "gradient"
    description = "plain input gradients"


@register
class Deconvnet(Backprop):
    """Zeiler and Fergus's deconvnet rule: R·1[R>0] at every ReLU."""

    name = "deconvnet"
    order = 40
    rule = "deconvnet"
    description = "deconvnet signals"


@register
class GuidedBackprop(Backprop):
    """Springenberg et al.'s guided backpropagation: R·1[f>0]·1[R>0] at every ReLU."""

    name = "guided_backprop"
    order = 20
    rule = "guided"
    description = "guided backpropagation"
