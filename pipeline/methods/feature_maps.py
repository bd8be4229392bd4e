"""``feature_maps``: a layer's activations for one image, the most active channels first. Pure tensor code."""

from __future__ import annotations

from dataclasses import dataclass

import torch

RANKINGS = ("mean", "max")


@dataclass
class FeatureMaps:
    """``maps`` [k, H, W] raw activations of ``channels``, with the ranking ``scores`` that chose them."""

    maps: torch.Tensor
    channels: list[int]
    scores: list[float]


def feature_maps(
    activation: torch.Tensor, top_k: int = 64, channels: list[int] | None = None, rank_by: str = "mean"
) -> FeatureMaps:
    """Pick channels of one image's activation [C, H, W]: an explicit list, or the top ``top_k`` by ``rank_by``."""
    if activation.dim() != 3:
        raise ValueError(f"expected an activation [C, H, W], got shape {tuple(activation.shape)}")
    if rank_by not in RANKINGS:
        raise ValueError(f"feature_maps.rank_by must be one of {RANKINGS}, got {rank_by!r}")
    act = activation.detach()
    flat = act.flatten(1)
    scores = flat.mean(1) if rank_by == "mean" else flat.amax(1)
    num = act.shape[0]
    if channels:
        bad = [c for c in channels if not -num <= int(c) < num]
        if bad:
            raise ValueError(f"feature_maps.channels {bad} out of range for a layer with {num} channels")
        index = torch.tensor([int(c) % num for c in channels], device=act.device)
    else:
        k = num if top_k is None or top_k <= 0 else min(top_k, num)
        index = torch.topk(scores, k, sorted=True).indices
    maps = act.index_select(0, index).float().cpu()
    return FeatureMaps(maps=maps, channels=index.tolist(), scores=scores[index].float().cpu().tolist())
