"""A plugin method that takes a known time: ``slow_energy`` waits ``seconds`` per layer and image batch, then
makes the channel-summed energy map. The real-cluster tests (test_slurm.py) use it so that a job is still running
when a signal comes, whatever the speed of the machine; loaded with ``plugins=[tests.slow_method]``.

With ``first_run_only``, a SLURM job waits only before its first requeue (``SLURM_RESTART_COUNT`` unset or 0):
a job that outlives its time limit once, then resumes and finishes, however slowly the machine starts Python."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from pipeline.methods import base, register


@dataclass(frozen=True)
class Params(base.Params):
    seconds: float = field(default=1.0, metadata={"min": 0.0, "max": 60.0, "help": "wait per layer and batch"})
    first_run_only: bool = field(default=False, metadata={"help": "no wait once SLURM has requeued the job"})


@register
class SlowEnergy(base.Method):
    name = "slow_energy"
    Params = Params

    def for_layer_batch(self, view: base.LayerView) -> list[base.Output]:
        energy = view.activation.detach().float().pow(2).sum(1).cpu().numpy()  # [N, H, W]
        if not (self.params.first_run_only and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0):
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
