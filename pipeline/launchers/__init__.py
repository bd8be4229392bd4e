"""What the product adds to Hydra's launchers (registered from ``hydra_plugins/``, the only package Hydra reads):
``slurm`` waits for every SLURM job and names a lost one; ``workers`` records the jobs a dead joblib worker cut
short."""
