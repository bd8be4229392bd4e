"""A method defined outside the package, as a user would write one: registered on import, nothing else edited.

``toy_energy``: per (layer, image), the channel-summed squared activation map. Used by test_plugins.py, which
loads it with ``plugins=[toy_method]``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.methods import base, register


@dataclass(frozen=True)
class Params(base.Params):
    power: int = field(default=2, metadata={"min": 1, "max": 4})


@register
class ToyEnergy(base.Method):
    name = "toy_energy"
    Params = Params

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        energy = view.activation.detach().float().pow(self.params.power).sum(1).cpu().numpy()  # [N, H, W]
        return [
            base.Output(
                array=energy[i],
                picture=base.Picture([base.MapTile(energy[i], "energy")], "channel-summed energy", self.params.tile_px),
                image=i,
                layer=view.layer.name,
                fields={"power": self.params.power},
            )
            for i in range(len(energy))
        ]
