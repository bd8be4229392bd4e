"""A plugin method that takes a known time: ``slow_energy`` waits ``seconds`` per layer and image batch, then
makes the channel-summed energy map. The real-cluster tests (test_slurm.py) use it so that a job is still running
when SLURM's time-limit signal comes, whatever the speed of the machine; loaded with ``plugins=[tests.slow_method]``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.methods import base, register


@dataclass(frozen=True)
class Params(base.Params):
    seconds: float = field(default=1.0, metadata={"min": 0.0, "max": 60.0, "help": "wait per layer and batch"})


@register
class SlowEnergy(base.Method):
    name = "slow_energy"
    Params = Params

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        energy = view.activation.detach().float().pow(2).sum(1).cpu().numpy()  # [N, H, W]
        time.sleep(self.params.seconds)  # a signal ends the wait at once (its handler runs in this thread)
        return [
            base.Output(
                array=energy[i],
                picture=base.Picture([base.MapTile(energy[i], "energy")], "slow energy", self.params.tile_px),
                image=i,
                layer=view.layer.name,
            )
            for i in range(len(energy))
        ]
