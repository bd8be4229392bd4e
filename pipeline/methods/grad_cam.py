"""``grad_cam`` (Selvaraju et al. 2017): α_k = mean over (i, j) of ∂y_c/∂A_k; map = ReLU(Σ_k α_k A_k)."""

from __future__ import annotations

import torch

from pipeline.methods._cam import CamMethod
from pipeline.methods.registry import register


def grad_cam_map(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM [N, h, w] from A and g [N, C, h, w]: channels weighted by their mean gradient, then ReLU."""
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    return (alpha * activation).sum(1).clamp_min(0)


@register
class GradCam(CamMethod):
    """Where the layer's channels that raise the class logit are active (class-discriminative, coarse)."""

    name = "grad_cam"
    order = 50
    description = "Grad-CAM class activation maps"

    def cam(self, activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grad_cam_map(activation, grads)
