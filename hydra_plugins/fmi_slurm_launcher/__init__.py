"""The `slurm` preset's launcher, where Hydra looks for launchers (its plugins live in ``hydra_plugins``).

The code is ``pipeline.launchers.slurm``; this package only gives it a name Hydra accepts."""

from pipeline.launchers.slurm import WatchingSlurmLauncher


class SlurmLauncher(WatchingSlurmLauncher):
    """Hydra's submitit SLURM launcher, waiting for every job and naming lost ones (see pipeline.launchers)."""
