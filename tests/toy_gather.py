"""A gathering method defined outside the package, as a user would write one (loaded with ``plugins=[toy_gather]``).

``toy_peak``: per layer, each channel's highest activation over every image of the run (gathered batch by batch),
and the images it saw (shards merge: ``merge_states``); at the end, the layer's channel means for an all-ones input through ``FinishView.features``."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.methods import base, register


@register
class ToyPeak(base.Method):
    name = "toy_peak"
    gathers = True

    @property
    def scope(self) -> base.Scope:
        return base.Scope.LAYER

    def gather(self, view: base.LayerView, state: dict) -> None:
        peak = view.activation.detach().float().amax(dim=(0, 2, 3)).cpu().numpy()
        state["peak"] = peak if "peak" not in state else np.maximum(state["peak"], peak)
        state["seen"] = state.get("seen", 0) + view.activation.shape[0]
        state["images"] = [*state.get("images", []), *getattr(view, "indices", [])]  # global indices, when known

    def merge_states(self, states: list[dict]) -> dict:
        """Shards' states as one: the peak of peaks, the images counted and listed in shard order."""
        merged: dict = {}
        for state in states:
            if "peak" in state:
                merged["peak"] = state["peak"] if "peak" not in merged else np.maximum(merged["peak"], state["peak"])
            merged["seen"] = merged.get("seen", 0) + int(state.get("seen", 0))
            merged["images"] = [*merged.get("images", []), *(int(i) for i in state.get("images", []))]
        return merged

    def finish(self, view: base.FinishView) -> list[base.Output]:
        x = torch.ones(1, 3, view.input_size, view.input_size, device=view.device, requires_grad=True)
        found = view.features(x, [layer.name for layer in view.layers])
        outputs = []
        for layer in view.layers:
            state = view.states[layer.name]
            view.advance(1)
            peak = np.asarray(state["peak"]) if "peak" in state else np.zeros(0, dtype=np.float32)
            ones = found[layer.name].detach().float().mean(dim=(0, 2, 3)).cpu().numpy()
            outputs.append(
                base.Output(
                    array=peak,
                    picture=base.Picture([base.MapTile(peak[None], "peaks")], "channel peaks", self.params.tile_px),
                    layer=layer.name,
                    fields={"seen": int(state.get("seen", 0)), "ones_mean": [round(float(v), 6) for v in ones]},
                )
            )
        return outputs

    def finish_cost(self, layers: int) -> int:
        return layers
