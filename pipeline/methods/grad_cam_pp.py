"""``grad_cam_pp`` (Chattopadhay et al. 2018), in the closed form common implementations use:
a = g² / (2g² + (Σ_ij A_k)·g³ + 1e-6) where g ≠ 0, else 0; α_k = Σ_ij a·ReLU(g); map = ReLU(Σ_k α_k A_k)."""

from __future__ import annotations

import torch

from pipeline.methods._cam import CamMethod
from pipeline.methods.registry import register

EPS = 1e-6


@register
class GradCamPlusPlus(CamMethod):
    """Grad-CAM with per-position weights, so several instances of a class each get their share."""

    name = "grad_cam_pp"
    order = 60
    description = "Grad-CAM++ class activation maps"

    def cam(self, activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.pow(2)
        total = activation.sum(dim=(2, 3), keepdim=True)
        a = torch.where(grads != 0, g2 / (2 * g2 + total * g2 * grads + EPS), torch.zeros_like(grads))
        alpha = (a * grads.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
        return (alpha * activation).sum(1).clamp_min(0)
