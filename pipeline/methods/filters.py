"""``filters``: a conv layer's learned kernels, ready to tile. Pure tensor code."""

from __future__ import annotations

from dataclasses import dataclass

import torch

VIEWS = ("auto", "rgb", "channels", "mean")


@dataclass
class Filters:
    """Kernels to show: ``data`` is [n, c, kh, kw] raw weights; ``view`` says how to read the c axis.

    - ``rgb``: c == 3, one colour tile per filter (only for layers that see 3 input channels per group);
    - ``channels``: c input-channel slices per filter, shown as a small mosaic of signed kernels;
    - ``mean``: c == 1, the filter averaged over its input channels.
    """

    data: torch.Tensor
    indices: list[int]
    view: str
    in_channels_shown: int
    in_channels_total: int


def filters(weight: torch.Tensor, max_filters: int = 64, view: str = "auto", max_in_channels: int = 16) -> Filters:
    """Select the first ``max_filters`` output filters of a conv weight [out, in/groups, kh, kw]."""
    if weight.dim() != 4:
        raise ValueError(f"expected a 4-d conv weight, got shape {tuple(weight.shape)}")
    if view not in VIEWS:
        raise ValueError(f"filters.view must be one of {VIEWS}, got {view!r}")
    out_ch, in_ch = weight.shape[:2]
    if view == "auto":
        view = "rgb" if in_ch == 3 else "channels"
    if view == "rgb" and in_ch != 3:
        raise ValueError(f"filters.view=rgb needs 3 input channels per group, this layer has {in_ch}")
    n = out_ch if max_filters is None or max_filters <= 0 else min(out_ch, max_filters)
    w = weight[:n].detach().float().cpu()
    if view == "mean":
        w = w.mean(dim=1, keepdim=True)
    elif view == "channels":
        w = w[:, : max(1, max_in_channels)]
    return Filters(
        data=w.clone(), indices=list(range(n)), view=view, in_channels_shown=w.shape[1], in_channels_total=in_ch
    )
