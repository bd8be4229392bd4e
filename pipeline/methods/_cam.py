"""The private core of the CAM family: class targets, the shared parameters, and the picture of class maps.

Each CAM method (``grad_cam``, ``grad_cam_pp``, ``layer_cam``) is one module that only supplies its formula:
a map [N, h, w] from the layer's activation A [N, C, h, w] (as the conv produced it) and g = ∂y_c/∂A. The
gradients of every requested layer come from one backward per class, batched over the images, through the
engine's shared forward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from pipeline.methods import base
from pipeline.methods.params import changed


@dataclass(frozen=True)
class ClassParams(base.Params):
    """Which classes a class-targeted method explains."""

    top_k: int = field(default=3, metadata={"min": 1, "help": "the top predicted classes of each image"})
    class_index: tuple[int, ...] | None = field(default=None, metadata={"min": 0})  # or explicit classes
    tile_px: int = field(default=160, metadata={"min": 16, "max": 2048})

    def unused(self) -> dict[str, str]:
        return changed(self, "explicit class_index", "top_k") if self.class_index else {}


@dataclass(frozen=True)
class CamParams(ClassParams):
    cmap: str = field(default="jet", metadata={"check": "colormap"})  # overlay colormap, 0 to the map's max
    alpha: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # overlay opacity


def class_choice(logits: torch.Tensor, top_k: int, class_index: tuple[int, ...] | None) -> torch.Tensor:
    """Classes [k, N]: each image's ``top_k`` predicted classes in rank order, or the explicit ``class_index``."""
    logits = logits.detach()
    n, classes = logits.shape
    if class_index:
        bad = [c for c in class_index if not 0 <= c < classes]
        if bad:
            raise ValueError(f"class_index {bad} out of range for {classes} classes")
        return torch.tensor(class_index, device=logits.device).unsqueeze(1).expand(-1, n)
    return torch.topk(logits, min(top_k, classes), dim=1).indices.T


def classes_for(view: base.BatchView, params: ClassParams) -> torch.Tensor:
    """Classes [k, N] to explain: the pass's ``explain`` (one per image) when set, else the parameters' choice."""
    if view.explain is not None:
        return view.explain.to(view.logits.device)[None]
    return class_choice(view.logits, params.top_k, params.class_index)


def class_targets(view: base.BatchView, classes: torch.Tensor) -> list[list[dict]]:
    """Per image, its targets in tile order: class index, name (when the model has class names), logit."""
    values = view.logits.detach().gather(1, classes.T).float().cpu()  # [N, k]
    names = view.model.categories
    return [
        [
            {"class_index": int(c), **({"class_name": names[int(c)]} if names else {}), "value": float(v)}
            for c, v in zip(classes[:, i].tolist(), values[i].tolist(), strict=True)
        ]
        for i in range(classes.shape[1])
    ]


def label(target: dict) -> str:
    return f"{target.get('class_name', target['class_index'])} · {target['value']:.3g}"


def class_outputs(
    view: base.LayerView,
    params: ClassParams,
    data: torch.Tensor,
    targets: list[list[dict]],
    tile,
    header: str,
    fields: dict,
) -> list[base.Output]:
    """One Output per image: ``data`` [k, N, ...] per class, the input tile then ``tile(values, target, i)`` per
    class, labelled with the class name and its logit; ``fields`` go into every manifest line."""
    outputs = []
    for i, row in enumerate(targets):
        array = data[:, i].numpy()
        tiles: list[base.Tile] = [base.ImageTile(view.sources[i], "input")]
        tiles += [tile(values, t, i) for values, t in zip(array, row, strict=True)]
        picture = base.Picture(tiles, header, params.tile_px, params.columns)
        outputs.append(base.Output(array, picture, i, view.layer.name, {"targets": row, **fields}))
    return outputs


def what(params: ClassParams, k: int) -> str:
    return f"classes {list(params.class_index)}" if params.class_index else f"top {k} classes"


class CamMethod(base.Method):
    """A class activation map per (layer, image) and class, shown over the input; subclasses give ``cam``."""

    Params = CamParams

    @property
    def needs(self) -> base.Needs:
        return base.Needs(activations=True, logits=True, gradients=True)

    def check(self, model: base.ModelInfo) -> None:
        index, classes = self.params.class_index, model.num_classes
        bad = [c for c in index or () if classes is not None and c >= classes]
        if bad:
            raise ValueError(f"class_index {bad} is out of range for {model.name}, which has {classes} classes")

    def as_attribution(self) -> base.Method:
        return type(self)(dataclasses.replace(self.params, top_k=1, class_index=None))

    def cam(self, activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """The map [N, h, w] from activation A and gradients g, both [N, C, h, w]."""
        raise NotImplementedError

    def maps(self, view: base.LayerView, classes: torch.Tensor) -> torch.Tensor:
        """Maps [k, N, h, w] for classes [k, N] at the view's layer."""
        activation = view.activation.detach().float()
        found = [view.class_layer_grads(row)[view.layer.name].float() for row in classes]
        return torch.stack([self.cam(activation, g) for g in found])

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        p = self.params
        classes = classes_for(view, p)
        maps = self.maps(view, classes).cpu()  # [k, N, h, w]
        targets = class_targets(view, classes)
        h, w = maps.shape[-2:]
        header = f"{what(p, len(classes))}; map {h}×{w} at the layer's resolution, overlay {p.cmap} α {p.alpha}"

        def tile(values, target: dict, i: int) -> base.Tile:
            return base.OverlayTile(values, view.sources[i], label(target), p.cmap, p.alpha, lo=0.0)

        return class_outputs(view, p, maps, targets, tile, header, {"map_size": [h, w]})
