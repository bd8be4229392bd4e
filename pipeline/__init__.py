"""Filter-Map-Insights: filters, feature maps and guided backpropagation of torchvision CNNs.

Packages read top-down: ``config`` and ``plan`` (what to do), ``models`` (weights and layers),
``methods`` (pure tensor code), ``render`` (tiles to pictures), ``output`` (files and manifest),
``report`` (browsable index), with ``engine`` tying them together.
"""

__all__ = ["Artefact", "sweep", "visualize"]


def __getattr__(name: str):
    """``from pipeline import visualize`` (the Python door) without importing torch for every submodule."""
    if name in __all__:
        from pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
