"""A DepthPlot to PNG bytes with matplotlib (an Agg canvas of its own, no pyplot state, safe on render threads)."""

from __future__ import annotations

import io
import threading

from pipeline.methods import base

# matplotlib is not thread-safe (its mathtext parser fails when two render threads draw tick labels at once)
_LOCK = threading.Lock()


def depth_plot_png(plot: base.DepthPlot, dpi: int = 100) -> bytes:
    """One panel per statistic, stacked, sharing the depth axis (conv layer index)."""
    with _LOCK:
        return _draw(plot, dpi)


def _draw(plot: base.DepthPlot, dpi: int) -> bytes:
    # imported here: only runs that make plots pay for matplotlib's figure machinery at start-up
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 2.2 * len(plot.panels) + 0.6), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(plot.panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, series) in zip(axes, plot.panels, strict=True):
        for name, values in series.items():
            ax.plot(plot.depth, values, marker="o", markersize=2.5, linewidth=1.2, label=name)
        if title in plot.log_panels:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8, loc="best")
    axes[-1].set_xlabel("conv layer index (input → output)")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(plot.title, fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
