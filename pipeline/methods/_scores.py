"""Scores of attribution maps, as pure tensor code: similarity between two maps (Spearman rank correlation with
tied values averaged, SSIM) and RISE's deletion and insertion curves with their trapezoid AUC (Petsiuk et al.
2018). Used by ``sanity`` and ``faithfulness``; nothing here runs a model by itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.methods import base

BLUR_KERNEL = 11  # RISE's insertion starts from the image blurred with a Gaussian of this size and σ
BLUR_SIGMA = 5.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened ``values``, tied values sharing the mean of the ranks they span."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each run of ties
    ends = np.r_[starts[1:], flat.size]  # one past its last
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(flat.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of equal size (Pearson correlation of their average ranks); NaN
    when either map is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.size != rb.size:
        raise ValueError(f"maps of different sizes: {np.shape(a)} and {np.shape(b)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else math.nan


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (scikit-image) of two 2-d maps, each scaled to [0, 1] by its own maximum |value| (so only the
    pattern counts, not the scale); the window shrinks to fit small maps; NaN below 3 pixels a side."""
    from skimage.metrics import structural_similarity

    a, b = (np.abs(np.asarray(m, dtype=np.float64)) for m in (a, b))
    a, b = (m / m.max() if m.max() > 0 else m for m in (a, b))
    side = min(a.shape)
    if side < 3:
        return math.nan
    window = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(a, b, data_range=1.0, win_size=window))


def similarities(original: np.ndarray, changed: np.ndarray) -> dict[str, float]:
    """How alike two maps are: Spearman of |map| and of the signed map, and SSIM of |map|."""
    return {
        "spearman_abs": spearman(np.abs(original), np.abs(changed)),
        "spearman": spearman(original, changed),
        "ssim": ssim(original, changed),
    }


# --- RISE deletion and insertion ---------------------------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Each channel of ``x`` [N, C, H, W] convolved with a normalised, sampled 2-d Gaussian (``size``² taps, σ),
    zero-padded to keep its size (RISE's insertion baseline)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    kernel = (kernel / kernel.sum()).to(x.dtype).to(x.device)
    c = x.shape[1]
    return F.conv2d(x, kernel.expand(c, 1, size, size), padding=size // 2, groups=c)


def pixel_ranks(saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """For a map [h, w] upsampled bilinearly to ``size``, each pixel's place [H·W] in decreasing saliency (0 is
    the most salient; ties in row-major order)."""
    up = saliency.float()[None, None]
    if tuple(up.shape[-2:]) != tuple(size):
        up = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
    order = torch.sort(-up.flatten(), stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks


def steps_of(pixels: int, step: int) -> int:
    """Steps of a curve over ``pixels`` pixels at ``step`` per step (the last may move fewer)."""
    return -(-pixels // step)


@dataclass(frozen=True)
class Curve:
    """One curve to score: image ``image`` goes from ``start`` to ``end`` [3, H, W], pixels moving in the order of
    ``ranks`` [H·W], ``step`` at a time; scored as the probability of ``target``."""

    image: int
    start: torch.Tensor
    end: torch.Tensor
    ranks: torch.Tensor
    target: int
    step: int


def deletion(x: torch.Tensor, ranks: torch.Tensor, target: int, step: int, image: int = 0) -> Curve:
    """RISE deletion: from the image to zeros (in the model's normalised input space)."""
    return Curve(image, x, torch.zeros_like(x), ranks, target, step)


def insertion(x: torch.Tensor, ranks: torch.Tensor, target: int, step: int, image: int = 0) -> Curve:
    """RISE insertion: from the blurred image to the image."""
    return Curve(image, gaussian_blur(x[None])[0], x, ranks, target, step)


def _inputs(curves: list[Curve]) -> Iterator[tuple[int, int]]:
    for i, curve in enumerate(curves):
        for k in range(steps_of(curve.ranks.numel(), curve.step) + 1):
            yield i, k


def curve_scores(
    curves: list[Curve], logits_of: Callable[[torch.Tensor], torch.Tensor], chunk: int
) -> list[np.ndarray]:
    """Every curve's scores [steps + 1]: softmax probability of its target after 0, 1, … steps. All steps of all
    curves go through ``logits_of`` in chunks of at most ``chunk`` inputs, built only when their chunk runs."""
    pending = list(_inputs(curves))
    scores = [np.zeros(steps_of(c.ranks.numel(), c.step) + 1) for c in curves]
    for begin in range(0, len(pending), max(1, chunk)):
        part = pending[begin : begin + max(1, chunk)]
        inputs = []
        for i, k in part:
            curve = curves[i]
            moved = (curve.ranks < k * curve.step).view(1, *curve.start.shape[-2:])
            inputs.append(torch.where(moved, curve.end, curve.start))
        probs = torch.softmax(logits_of(torch.stack(inputs)).float(), dim=1)
        targets = torch.tensor([curves[i].target for i, _ in part], device=probs.device)
        picked = probs.gather(1, targets[:, None])[:, 0].cpu().numpy()
        for (i, k), p in zip(part, picked, strict=True):
            scores[i][k] = p
    return scores


def auc(scores: np.ndarray) -> float:
    """Area under a curve of n ≥ 2 scores spread evenly over [0, 1] by the trapezoid rule."""
    scores = np.asarray(scores, dtype=np.float64)
    return float((scores.sum() - scores[0] / 2 - scores[-1] / 2) / (scores.size - 1))


# --- the maps being judged ---------------------------------------------------------------------------------------
def attribution_methods(methods: list[base.Method]) -> list[base.Method]:
    """The attribution methods among ``methods``, each set to explain one class per image (``as_attribution``)."""
    found = [m.as_attribution() for m in methods]
    return [m for m in found if m is not None]


def maps_of(made: list[tuple[base.Method, base.Output]]) -> dict[tuple[str, str | None], dict[int, np.ndarray]]:
    """Each attribution's 2-d map per image, by (method, layer) in the order made."""
    maps: dict[tuple[str, str | None], dict[int, np.ndarray]] = {}
    for method, output in made:
        maps.setdefault((method.name, output.layer), {})[output.image] = method.saliency(output)
    return maps


def key_text(key: tuple[str, str | None]) -> str:
    """``method`` or ``method @ layer``."""
    return key[0] if key[1] is None else f"{key[0]} @ {key[1]}"


def target_of(view: base.BatchView, i: int) -> dict:
    """Image ``i``'s top-1 class of the pass: index, name (when known), probability."""
    probs = torch.softmax(view.logits.detach().float(), dim=1)[i]
    c = int(probs.argmax())
    names = view.model.categories
    return {"class_index": c, **({"class_name": names[c]} if names else {}), "prob": round(float(probs[c]), 5)}
