"""The engine: the shared pass (``shared``), the order of work per batch (``work``) and the sweep (``sweep``)."""

from pipeline.engine.sweep import Summary, run

__all__ = ["Summary", "run"]
