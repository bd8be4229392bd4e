"""Further pictures of an artefact (``Output.files``) to bytes: an Animation as GIF, a DepthPlot or LinePlot as PNG."""

from __future__ import annotations

from pipeline.methods import base
from pipeline.render.animation import gif_bytes
from pipeline.render.plots import depth_plot_png, line_plot_png


def file_bytes(item: base.Animation | base.DepthPlot | base.LinePlot, font_px: int = 12) -> tuple[str, bytes]:
    """(file suffix, content) of one extra picture."""
    if isinstance(item, base.Animation):
        return "gif", gif_bytes(item, font_px)
    if isinstance(item, base.DepthPlot):
        return "stats.png", depth_plot_png(item)
    if isinstance(item, base.LinePlot):
        return item.suffix, line_plot_png(item)
    raise TypeError(f"no renderer for {type(item).__name__}")
