"""``guided_grad_cam`` (Selvaraju et al. 2017): guided backprop from the class logit y_c to the input [3, H, W],
multiplied by that class's Grad-CAM at the layer upsampled bilinearly (align_corners=False) to H×W. No
normalisation. High-resolution like guided backprop, class-discriminative like Grad-CAM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.methods import _cam, base
from pipeline.methods._crop import cropped_label, signal_box
from pipeline.methods._rules import ACTIVATION_POLICY
from pipeline.methods.grad_cam import grad_cam_map
from pipeline.methods.registry import register


@dataclass(frozen=True)
class Params(base.SmoothingParams, _cam.ClassParams):
    display: Literal["signed", "positive"] = "signed"  # gray = 0, or the positive part only
    percentile: float = field(default=99.5, metadata={"above": 0, "max": 100})  # per-tile clip of |signal|
    # receptive: each tile at the receptive field of its Grad-CAM's peak unit; auto and none: the whole input
    # (a class signal has no single unit, so auto never crops it)
    crop: Literal["auto", "receptive", "none"] = "auto"
    tile_px: int = field(default=160, metadata={"min": 16, "max": 2048})

    def unused(self) -> dict[str, str]:
        return {**_cam.ClassParams.unused(self), **base.SmoothingParams.unused(self)}


@register
class GuidedGradCam(_cam.CamMethod):
    """Per (layer, image) and class: the guided-backprop signal of the class, masked by its Grad-CAM."""

    name = "guided_grad_cam"
    order = 80
    Params = Params
    description = "guided backprop × Grad-CAM"

    def manifest_params(self) -> dict:
        return {**super().manifest_params(), "activation_policy": ACTIVATION_POLICY}

    def cam(self, activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grad_cam_map(activation, grads)

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        p = self.params
        classes = _cam.classes_for(view, p)  # [k, N]
        cams = self.maps(view, classes)  # [k, N, h, w]
        guided = view.class_input_grads("guided", classes, p.noise()).float()  # [k, N, 3, H, W]
        k, n, _, height, width = guided.shape
        up = F.interpolate(
            cams.reshape(k * n, 1, *cams.shape[-2:]), (height, width), mode="bilinear", align_corners=False
        )
        signal = (guided * up.reshape(k, n, 1, height, width)).cpu()
        targets = _cam.class_targets(view, classes)
        h, w = cams.shape[-2:]
        header = (
            f"{_cam.what(p, k)}; Grad-CAM {h}×{w} upsampled bilinearly; display {p.display} p{p.percentile}"
            f"{p.smoothing_text()}"
        )

        peaks = cams.flatten(2).argmax(-1).cpu()  # [k, N]: each class map's strongest unit
        field_ = view.layer.receptive
        crops: dict[tuple[int, int], tuple[int, int, int, int] | None] = {}
        for j in range(k):
            for i in range(n):
                unit = divmod(int(peaks[j, i]), w)
                crops[j, i] = signal_box(field_, unit, p.crop) if p.crop == "receptive" else None
        if any(box is not None for box in crops.values()):
            header += f"; tiles cropped at the {field_.text()} of each Grad-CAM's peak unit"

        def tile(values, target: dict, i: int) -> base.Tile:
            box = crops[targets[i].index(target), i]
            shown = values if box is None else values[:, box[0] : box[2], box[1] : box[3]]
            return base.SignalTile(shown, cropped_label(_cam.label(target), box), p.display, p.percentile)

        fields = {"map_size": [h, w], "input_size": [height, width]}
        outputs = _cam.class_outputs(view, p, signal, targets, tile, header, fields)
        for i, out in enumerate(outputs):
            boxes = [crops[j, i] for j in range(k)]
            if any(box is not None for box in boxes):
                out.fields = {**out.fields, "crops": [None if b is None else list(b) for b in boxes]}
        return outputs
