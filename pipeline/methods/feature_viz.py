"""``feature_viz``: for each chosen channel of a layer, an image optimised to excite it (Olah et al., Distill 2017).

Every channel of every requested layer is optimised together: one truncated forward per step through
``view.features`` carries a batch of samples, each with its own generator, so batching never changes a picture.
On a CPU each layer is its own group (the forward stops at that layer); on a GPU layers share one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from pipeline.methods import _optvis as ov
from pipeline.methods import base
from pipeline.methods._channels import choose
from pipeline.methods.params import changed
from pipeline.methods.registry import register


@dataclass(frozen=True)
class Params(base.Params):
    channels: list[int] | None = field(default=None, metadata={"min": 0, "help": "channels to show (null: select)"})
    max_channels: int = field(default=16, metadata={"min": 1, "max": 4096, "help": "channels shown per layer"})
    select: Literal["auto", "active", "first"] = "auto"  # auto: active when the run has images, else first
    objective: Literal["channel", "neuron"] = "channel"  # mean of the channel, or its centre unit
    param: Literal["fft", "pixel"] = "fft"  # 1/f Fourier image, or plain pixels (both colour-decorrelated)
    transforms: Literal["standard", "none"] = "standard"  # Lucid's pad, jitter, scale, rotate, jitter
    size: int = field(default=128, metadata={"min": 8, "max": 1024, "help": "side of the optimised image (px)"})
    steps: int = field(default=256, metadata={"min": 1, "max": 100000, "help": "Adam steps"})
    lr: float = field(default=0.05, metadata={"above": 0.0, "max": 10.0, "help": "Adam learning rate"})
    max_batch: int = field(default=256, metadata={"min": 1, "max": 65536, "help": "images per forward at most"})
    tile_px: int = field(default=128, metadata={"min": 16, "max": 2048})

    def unused(self) -> dict[str, str]:
        return changed(self, "channels is set", "select", "max_channels") if self.channels is not None else {}


@dataclass
class Sample:
    """One channel to optimise: its layer, channel index and its own random stream."""

    layer: str
    channel: int
    init: torch.Tensor
    draws: torch.Tensor  # [steps, 6] uniform draws of the transforms


def key_params(p: Params) -> tuple:
    """The parameters a picture depends on (not which channels or how many share its batch)."""
    return (p.objective, p.param, p.transforms, p.size, p.steps, p.lr)


def objective_values(feats: dict[str, torch.Tensor], samples: list[Sample], objective: str) -> torch.Tensor:
    """Each sample's objective [B] read from the conv outputs (sample i is row i of its layer's output)."""
    values = []
    for i, s in enumerate(samples):
        a = feats[s.layer][i, s.channel]
        values.append(a.mean() if objective == "channel" else a[ov.centre(*a.shape)])
    return torch.stack(values)


def to_input(raw: torch.Tensor, p: Params, theta: torch.Tensor | None, model: base.ModelInfo, out: int) -> torch.Tensor:
    """Parameters [B, ...] → the model's preprocessed input [B, 3, out, out]: RGB, transformed (None: resized),
    normalised."""
    mean = torch.tensor(model.mean, device=raw.device).view(1, -1, 1, 1)
    std = torch.tensor(model.std, device=raw.device).view(1, -1, 1, 1)
    return (ov.resample(ov.to_rgb(raw, p.param, p.size), theta, out) - mean) / std


def optimise(view: Any, samples: list[Sample], p: Params, on_step) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on every sample's parameters together: images [B, 3, size, size] in [0, 1] and the objective each
    reaches without transforms. ``on_step`` is called after each step (progress and stops)."""
    out = view.input_size
    layers = list(dict.fromkeys(s.layer for s in samples))
    raw = torch.stack([s.init for s in samples]).to(view.device).requires_grad_(True)
    draws = torch.stack([s.draws for s in samples], 1)  # [steps, B, 6]
    adam = torch.optim.Adam([raw], lr=p.lr)
    for step in range(p.steps):
        theta = None if p.transforms == "none" else ov.transform_theta(draws[step], len(samples), p.size, out)
        with torch.enable_grad():
            x = to_input(raw, p, theta, view.model, out)
            loss = -objective_values(view.features(x, layers), samples, p.objective).sum()
            # only the image's gradient: no weight gradient is computed, nothing lands in the model's .grad
            (raw.grad,) = torch.autograd.grad(loss, [raw])
        adam.step()
        on_step()
    with torch.no_grad():
        x = to_input(raw.detach(), p, None, view.model, out)
        reached = objective_values(view.features(x, layers), samples, p.objective)
        rgb = ov.to_rgb(raw.detach(), p.param, p.size)
    return rgb.cpu(), reached.cpu()


def groups(order: list[str], samples: list[Sample], max_batch: int, merge: bool) -> list[list[Sample]]:
    """Batches of samples in model order: one per layer (each forward stops at its layer), or layers merged while
    they fit in ``max_batch``; a layer with more samples than ``max_batch`` is split."""
    by_layer: dict[str, list[Sample]] = {name: [] for name in order}
    for s in samples:
        by_layer[s.layer].append(s)
    batches: list[list[Sample]] = []
    for name in order:
        for start in range(0, len(by_layer[name]), max_batch):
            part = by_layer[name][start : start + max_batch]
            if merge and batches and len(batches[-1]) + len(part) <= max_batch:
                batches[-1].extend(part)
            else:
                batches.append(list(part))
    return batches


@register
class FeatureViz(base.Method):
    """One grid per layer: for each chosen channel, the image that excites it most, from noise by gradient ascent."""

    name = "feature_viz"
    order = 5
    Params = Params
    description = "images optimised to excite each channel"
    gathers = True

    @property
    def scope(self) -> base.Scope:
        return base.Scope.LAYER

    @property
    def needs(self) -> base.Needs:
        return base.Needs(activations=True)

    def gather(self, view: base.LayerView, state: dict) -> None:
        """Fold this batch's per-channel mean activation and objective maximum into ``state`` (numpy, float64)."""
        a = view.activation.detach()
        means = a.float().mean(dim=(2, 3)).double().cpu().numpy()  # [N, C]
        if self.params.objective == "channel":
            values = means
        else:
            values = a[:, :, a.shape[2] // 2, a.shape[3] // 2].double().cpu().numpy()
        if state:
            state["mean"] = state["mean"] + means.sum(0)
            state["max"] = np.maximum(state["max"], values.max(0))
            state["count"] += means.shape[0]
        else:
            state.update(mean=means.sum(0), max=values.max(0), count=means.shape[0])

    def finish_cost(self, layers: int) -> int:
        return self.params.steps * layers

    def finish(self, view: Any) -> list[base.Output]:
        p = self.params
        chosen = {layer.name: choose(p, layer.out_channels, view.states.get(layer.name, {})) for layer in view.layers}
        samples = []
        for layer in view.layers:
            for c in chosen[layer.name][0]:
                gen = ov.generator(view.seed, view.model.name, layer.name, c, key_params(p))
                samples.append(Sample(layer.name, c, ov.initial(gen, p.param, p.size), ov.draws(gen, p.steps)))
        order = [layer.name for layer in view.layers]
        merge = torch.device(view.device).type != "cpu"
        bound = view.batch_limit  # memory_budget's bound on one forward with its graph
        batches = groups(order, samples, min(p.max_batch, bound or p.max_batch), merge)
        weight = {name: 1.0 / max(1, len(chosen[name][0])) for name in order}
        done = [0.0, 0]  # layer-steps done (fractional), units reported

        results: dict[tuple[str, int], tuple[torch.Tensor, float]] = {}
        for batch in batches:
            share = sum(weight[s.layer] for s in batch)

            def on_step(share: float = share) -> None:
                done[0] += share
                units = round(done[0]) - done[1]
                done[1] += units
                view.advance(units)

            images, reached = optimise(view, batch, p, on_step)
            for s, img, value in zip(batch, images, reached.tolist(), strict=True):
                results[(s.layer, s.channel)] = (img, value)
        left = self.finish_cost(len(order)) - done[1]
        if left > 0:
            view.advance(left)  # layers without any channel
        return [
            self._output(layer, chosen[layer.name], results, view.states.get(layer.name, {})) for layer in view.layers
        ]

    def _output(self, layer, chosen: tuple[list[int], str], results: dict, state: dict) -> base.Output:
        p = self.params
        channels, how = chosen
        images = [results[(layer.name, c)][0] for c in channels]
        reached = [results[(layer.name, c)][1] for c in channels]
        array = torch.stack(images).numpy() if images else np.zeros((0, 3, p.size, p.size), np.float32)
        natural = [float(state["max"][c]) for c in channels] if state else None
        ratio = [a / n if n > 0 else None for a, n in zip(reached, natural, strict=True)] if natural else None
        tiles = [
            base.ImageTile((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), f"ch {c} · {a:.3g}")
            for c, img, a in zip(channels, images, reached, strict=True)
        ]
        what = "centre unit" if p.objective == "neuron" else "channel mean"
        header = f"{len(channels)} of {layer.out_channels} channels ({how}), {what} maximised, {p.steps} steps"
        return base.Output(
            array=array,
            picture=base.Picture(tiles, header, p.tile_px, p.columns),
            layer=layer.name,
            fields={"channels": channels, "activation": reached, "natural_max": natural, "ratio": ratio},
            params={"select": how},
        )

    def merge_states(self, states: list[dict]) -> dict:
        """The state one run over every image would have gathered, from its shards' states (in order): the
        mean-sums and counts add, the maxima take the larger."""
        full = [s for s in states if s]
        if not full:
            return {}
        merged = {key: np.asarray(full[0][key], np.float64) for key in ("mean", "max")}
        for s in full[1:]:
            merged["mean"] = merged["mean"] + np.asarray(s["mean"], np.float64)
            merged["max"] = np.maximum(merged["max"], np.asarray(s["max"], np.float64))
        return {**merged, "count": sum(int(s["count"]) for s in full)}
