"""Which channels of a layer a per-channel picture shows: one rule shared by the methods that show channels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

SELECT = ("auto", "active", "first")


def select_channels(
    mean_activation: torch.Tensor | None,
    channels: Sequence[int] | None,
    max_channels: int,
    select: str,
    count: int | None = None,
) -> list[int]:
    """The channels to show: ``channels`` when given (negative counts from the end), else ``max_channels`` of them,
    ``active`` = highest mean activation first (ties: lower index), ``first`` = 0, 1, 2 ...; ``auto`` = active
    when a mean activation is known, else first. ``count`` (the layer's channels) defaults to the mean's length."""
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select!r}")
    if count is None:
        if mean_activation is None:
            raise ValueError("select_channels needs the layer's channel count or its mean activation")
        count = int(mean_activation.numel())
    if channels:
        bad = [c for c in channels if not -count <= int(c) < count]
        if bad:
            raise ValueError(f"channels {bad} out of range for a layer with {count} channels")
        return list(dict.fromkeys(int(c) % count for c in channels))
    take = min(max_channels, count)
    if select == "first" or (select == "auto" and mean_activation is None):
        return list(range(take))
    if mean_activation is None:
        raise ValueError("select=active needs the channels' mean activation")
    mean = mean_activation.detach().float().cpu().flatten()
    order = sorted(range(count), key=lambda c: (-float(mean[c]), c))
    return order[:take]


def choose(p: Any, out_channels: int, state: dict) -> tuple[list[int], str]:
    """The channels a per-channel picture shows at a layer, and how they were picked (``list``, ``active`` or
    ``first``): ``p.channels`` when set (those below ``out_channels``), else ``p.max_channels`` by ``p.select``,
    ``active`` ranking the mean activation over every image the run gathered (``state``: ``mean``, the sum of
    each image's channel means, and ``count``). ``feature_viz`` and ``top_patches`` both pick with it."""
    if p.channels is not None:
        return [c for c in dict.fromkeys(p.channels) if c < out_channels], "list"
    mean = torch.as_tensor(np.asarray(state["mean"]) / int(state["count"])) if state else None
    rule = p.select if mean is not None else "first"
    picked = select_channels(mean, None, p.max_channels, rule, count=out_channels)
    if p.select == "active" and mean is None:
        return picked, "active (no images: first)"
    return picked, "first" if rule == "first" else "active"
