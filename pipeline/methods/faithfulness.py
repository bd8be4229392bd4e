"""``faithfulness``: RISE deletion and insertion scores (Petsiuk et al. 2018) of every attribution method of the run.

Per image, each attribution method of the run explains the image's top-1 class (CAMs at every requested layer);
its map (|Σ over colour| of an input-space signal), upsampled bilinearly to the input, orders the
pixels by decreasing saliency. Deletion sets them to zero
(in the model's normalised input space) ``step`` pixels at a time; insertion puts them back into a blurred copy
(Gaussian, 11 taps, σ 5). Each curve is the softmax probability of the clean image's top class; its AUC is the
trapezoid rule over [0, 1]. A faithful map makes deletion fall fast (low AUC) and insertion rise fast (high AUC).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.methods import _scores, base
from pipeline.methods.registry import register


@dataclass(frozen=True)
class Params(base.Params):
    step: int | None = field(default=None, metadata={"min": 1, "help": "pixels per step (null: the input width)"})
    cmap: str = field(default="jet", metadata={"check": "colormap"})  # the overlay of each map judged
    alpha: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    tile_px: int = field(default=160, metadata={"min": 16, "max": 2048})


@register
class Faithfulness(base.Method):
    """Deletion and insertion curves and AUCs of each attribution method's map of the top-1 class, per image."""

    name = "faithfulness"
    order = 95
    Params = Params
    description = "deletion and insertion scores (RISE) of the attribution methods"
    reads_outputs = True

    @property
    def scope(self) -> base.Scope:
        return base.Scope.IMAGE

    @property
    def needs(self) -> base.Needs:
        return base.Needs(logits=True)

    def image_stem(self) -> str:
        return "faithfulness"

    def cost(self) -> float:
        """A guess for the progress bar: four maps × two curves of forwards at 224², a forward a quarter of a
        backward."""
        steps = 224 * 224 / (self.params.step or 224)
        return 4 * 2 * (steps + 1) / 4

    def for_batch(self, view: base.BatchView) -> list[base.Output]:
        p = self.params
        methods = _scores.attribution_methods(view.methods)
        if not methods:
            raise ValueError("no attribution method in this run to judge")
        _, made = next(view.rerun(methods, view.layers))
        maps = _scores.maps_of(made)
        height, width = view.x.shape[-2:]
        step = p.step or width
        top = view.logits.detach().argmax(1).tolist()
        curves, keys = [], []
        for i in range(len(view.labels)):
            x = view.x[i].detach()
            for key, per_image in maps.items():
                ranks = _scores.pixel_ranks(torch.from_numpy(np.abs(per_image[i])).to(x.device), (height, width))
                curves.append(_scores.deletion(x, ranks, top[i], step, i))
                curves.append(_scores.insertion(x, ranks, top[i], step, i))
                keys.append((i, key))
        scores = _scores.curve_scores(curves, view.logits_of, view.chunk)
        outputs = []
        for i in range(len(view.labels)):
            mine = [(key, scores[2 * j], scores[2 * j + 1]) for j, (image, key) in enumerate(keys) if image == i]
            outputs.append(self._output(view, i, mine, {key: maps[key][i] for key in maps}, step))
        return outputs

    def _output(self, view: base.BatchView, i: int, found: list, maps: dict, step: int) -> base.Output:
        p = self.params
        target = _scores.target_of(view, i)
        rows, deletion, insertion = [], {}, {}
        tiles: list[base.Tile] = [base.ImageTile(view.sources[i], "input")]
        for key, down, up in found:
            name = _scores.key_text(key)
            row = {
                "method": key[0],
                "layer": key[1],
                "deletion_auc": _scores.auc(down),
                "insertion_auc": _scores.auc(up),
            }
            rows.append(row)
            deletion[f"{name} (AUC {row['deletion_auc']:.3f})"] = down.tolist()
            insertion[f"{name} (AUC {row['insertion_auc']:.3f})"] = up.tolist()
            label = f"{name} · del {row['deletion_auc']:.2f} ins {row['insertion_auc']:.2f}"
            tiles.append(base.OverlayTile(np.abs(maps[key]), view.sources[i], label, p.cmap, p.alpha, lo=0.0))
        what = target.get("class_name", target["class_index"])
        plot = base.LinePlot(
            title=f"{view.model.name} · {view.labels[i]}: probability of '{what}' as pixels move by saliency",
            panels=[
                ("deletion (to zero): lower is better", deletion),
                ("insertion (from blur): higher is better", insertion),
            ],
            xlabel="fraction of pixels moved",
            ylim=(0.0, 1.0),
            suffix="curves.png",
        )
        header = f"deletion and insertion of the top-1 class '{what}' ({target['prob']:.3f}), {step} pixels per step"
        picture = base.Picture(tiles, header, p.tile_px, p.columns, where="maps judged by deletion and insertion")
        array = np.stack([np.stack([down, up]) for _, down, up in found]).astype(np.float32)
        fields = {"target": target, "step": step, "scores": rows}
        return base.Output(array, picture, i, None, fields, files={"curves": plot})
