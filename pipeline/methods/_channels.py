"""Which channels of a layer a per-channel picture shows: one rule shared by the methods that show channels."""

from __future__ import annotations

from collections.abc import Sequence

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
