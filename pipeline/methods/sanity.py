"""``sanity``: cascading model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Per image, each attribution method of the run explains the original model's top-1 class (CAMs at the deepest
requested layer), first on the model, then on one copy of it whose parameterised modules (those with
``reset_parameters``, BatchNorm included: its running statistics go back to mean 0, variance 1) are re-initialised
from the output downwards, stage by stage: ``blocks`` (the classifier, then the top 25, 50, 75 and 100 % of the
conv layers) or ``layers`` (one module per stage, as Quantus's MPRT). Each module is reset by its own
``reset_parameters`` right after ``torch.manual_seed(seed + 1)`` (Quantus's convention; the caller's random state is
restored). A map that stays alike while the weights it should explain are destroyed fails the check.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods import _scores, base
from pipeline.methods.registry import register

MEASURES = ("spearman_abs", "spearman", "ssim")
FRACTIONS = (25, 50, 75, 100)
MAX_COLUMNS = 12  # stages shown in the picture (spread evenly; every stage is in the plot and the manifest)


@dataclass(frozen=True)
class Params(base.Params):
    stages: Literal["blocks", "layers"] = "blocks"  # classifier then 25/50/75/100 % of the convs, or one module each
    seed: int = field(default=42, metadata={"min": 0, "help": "torch.manual_seed(seed + 1) before each reset"})
    cmap: str = field(default="gray", metadata={"check": "colormap"})  # the |map| tiles
    tile_px: int = field(default=96, metadata={"min": 16, "max": 2048})


def resettable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules with ``reset_parameters``, top-down (reverse ``named_modules`` order)."""
    found = [(n, m) for n, m in model.named_modules() if n and callable(getattr(m, "reset_parameters", None))]
    return found[::-1]


def stage_plan(model: nn.Module, stages: str) -> list[tuple[str, list[nn.Module]]]:
    """The stages, top-down, each with the modules it re-initialises beyond the stages before it."""
    found = resettable(model)
    if stages == "layers":
        return [(name, [module]) for name, module in found]
    convs = [i for i, (_, m) in enumerate(found) if isinstance(m, nn.modules.conv._ConvNd)]
    ends = [("classifier", convs[0] if convs else len(found))]
    for fraction in FRACTIONS if convs else ():
        count = max(1, math.ceil(len(convs) * fraction / 100))
        ends.append((f"top {fraction}% convs", len(found) if fraction == 100 else convs[count - 1] + 1))
    plan, done = [], 0
    for label, end in ends:
        if end > done:
            plan.append((label, [m for _, m in found[done:end]]))
            done = end
    return plan


def reset(module: nn.Module, seed: int) -> None:
    """``module.reset_parameters()`` right after ``torch.manual_seed(seed)``, the caller's random state kept."""
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        module.reset_parameters()


@register
class Sanity(base.Method):
    """How much each attribution method's map changes as the model's weights are randomised from the top."""

    name = "sanity"
    order = 96
    Params = Params
    description = "model-randomisation sanity check of the attribution methods"
    reads_outputs = True

    @property
    def scope(self) -> base.Scope:
        return base.Scope.IMAGE

    @property
    def needs(self) -> base.Needs:
        return base.Needs(logits=True)

    def image_stem(self) -> str:
        return "sanity"

    def cost(self) -> float:
        """A guess for the progress bar: four attribution maps made again at each of 6 (blocks) or ~100 stages."""
        return 4.0 * (6 if self.params.stages == "blocks" else 100)

    def edit(self, model: nn.Module, plan_sizes: list[int]) -> Iterator[str]:
        """Re-initialise ``model`` stage by stage (yielding each stage's label); ``plan_sizes`` gets the module
        count of every stage before the first yield."""
        plan = stage_plan(model, self.params.stages)
        plan_sizes.extend(len(modules) for _, modules in plan)
        for label, modules in plan:
            for module in modules:
                reset(module, self.params.seed + 1)
            yield label

    def for_batch(self, view: base.BatchView) -> list[base.Output]:
        p = self.params
        methods = _scores.attribution_methods(view.methods)
        if not methods:
            raise ValueError("no attribution method in this run to check")
        layers = view.layers[-1:]  # the CAMs at the deepest requested layer
        _, made = next(view.rerun(methods, layers))
        original = _scores.maps_of(made)
        n = len(view.labels)
        sizes: list[int] = []
        labels: list[str] = []
        scores = {key: np.zeros((n, 0, len(MEASURES))) for key in original}
        kept: dict = {key: {} for key in original}  # key -> stage -> per-image small |map| (shown stages only)
        for label, made in view.rerun(methods, layers, lambda model: self.edit(model, sizes)):
            stage = len(labels)
            labels.append(label)
            shown = stage in set(spread(len(sizes), MAX_COLUMNS))
            for key, per_image in _scores.maps_of(made).items():
                row = [[_scores.similarities(original[key][i], per_image[i])[m] for m in MEASURES] for i in range(n)]
                scores[key] = np.concatenate([scores[key], np.asarray(row)[:, None]], axis=1)
                if shown:
                    kept[key][label] = [small(per_image[i], p.tile_px) for i in range(n)]
        return [self._output(view, i, original, scores, kept, labels, sizes) for i in range(n)]

    def _output(self, view, i: int, original: dict, scores: dict, kept: dict, labels: list, sizes: list) -> base.Output:
        p = self.params
        target = _scores.target_of(view, i)
        rows = [base.Row(["input"], [base.ImageTile(view.sources[i], "input")])]
        results = []
        for key in original:
            tiles = [base.MapTile(small(original[key][i], p.tile_px), "original", p.cmap)]
            tiles += [base.MapTile(maps[i], label, p.cmap) for label, maps in kept[key].items()]
            final = scores[key][i, -1] if labels else [math.nan] * len(MEASURES)
            title = [key[0], *([f"@ {key[1]}"] if key[1] else []), f"ρ|·| at the end {final[0]:.2f}"]
            rows.append(base.Row(title, tiles))
            per_stage = {m: [number(v) for v in scores[key][i, :, j]] for j, m in enumerate(MEASURES)}
            results.append(
                {
                    "method": key[0],
                    "layer": key[1],
                    **per_stage,
                    "final": dict(zip(MEASURES, map(number, final), strict=True)),
                }
            )
        what = target.get("class_name", target["class_index"])
        header = (
            f"cascading randomisation from the top ({p.stages}, seed {p.seed}), |map| of the original top-1 class"
            f" '{what}'; columns: original, then {len(kept[next(iter(original))])} of {len(labels)} stages"
        )
        x = list(range(len(labels) + 1))
        panels = [
            (f"{m} to the original map", {_scores.key_text(k): [1.0, *scores[k][i, :, j].tolist()] for k in original})
            for j, m in enumerate(MEASURES)
        ]
        plot = base.LinePlot(
            title=f"{view.model.name} · {view.labels[i]}: similarity as weights are randomised from the top",
            panels=panels,
            x=x,
            ticks=["original", *labels] if len(labels) <= 30 else (),
            xlabel="stage (modules re-initialised from the output downwards)",
            ylim=(-1.05, 1.05),
            suffix="similarity.png",
        )
        array = np.stack([scores[k][i] for k in original]).astype(np.float32)  # [maps, stages, measures]
        fields = {"target": target, "stages": labels, "modules_reset": sizes, "measures": list(MEASURES)}
        fields["scores"] = results
        picture = base.RowsPicture(rows, header, p.tile_px, where="model-randomisation sanity check")
        return base.Output(array, picture, i, None, fields, files={"similarity": plot})


def number(value: float) -> float | None:
    """A score for the manifest: rounded, NaN (a constant map) as null."""
    return None if math.isnan(value) else round(float(value), 6)


def spread(count: int, most: int) -> list[int]:
    """At most ``most`` of ``count`` positions, evenly spread, always the last."""
    if count <= most:
        return list(range(count))
    return sorted({round(count - 1 - k * (count - 1) / (most - 1)) for k in range(most)})


def small(values: np.ndarray, size: int) -> np.ndarray:
    """|map| box-averaged so its longer side is at most ``size`` (a picture tile; scores use the full map)."""
    t = torch.from_numpy(np.abs(np.asarray(values, dtype=np.float32)))[None, None]
    h, w = t.shape[-2:]
    if max(h, w) > size:
        target = (max(1, round(h * size / max(h, w))), max(1, round(w * size / max(h, w))))
        t = F.interpolate(t, size=target, mode="area")
    return t[0, 0].numpy()
