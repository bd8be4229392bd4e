"""``layer_cam`` (Jiang et al. 2021): map = ReLU(Σ_k ReLU(∂y_c/∂A_k) ⊙ A_k), position by position."""

from __future__ import annotations

import torch

from pipeline.methods._cam import CamMethod
from pipeline.methods.registry import register


@register
class LayerCam(CamMethod):
    """Positive gradients weight each position on its own: finer maps than Grad-CAM, useful at shallow layers."""

    name = "layer_cam"
    order = 70
    description = "Layer-CAM class activation maps"

    def cam(self, activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads.clamp_min(0) * activation).sum(1).clamp_min(0)
