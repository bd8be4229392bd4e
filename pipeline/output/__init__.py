"""Files on disk: atomic writes, the per-run manifest and run.json."""
