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


def line_plot_png(plot: base.LinePlot, dpi: int = 100) -> bytes:
    """Named series in stacked panels, against ``plot.x`` (its ticks labelled) or each over [0, 1]."""
    with _LOCK:
        return _draw_lines(plot, dpi)


def _draw_lines(plot: base.LinePlot, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 2.6 * len(plot.panels) + 0.6), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(plot.panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, series) in zip(axes, plot.panels, strict=True):
        for name, values in series.items():
            x = plot.x if plot.x is not None else [i / max(1, len(values) - 1) for i in range(len(values))]
            marker = "o" if plot.x is not None and len(values) <= 40 else None
            ax.plot(x, values, marker=marker, markersize=3, linewidth=1.2, label=name)
        if plot.ylim is not None:
            ax.set_ylim(*plot.ylim)
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if plot.ticks and plot.x is not None:
        axes[-1].set_xticks(list(plot.x), list(plot.ticks), rotation=45 if len(plot.ticks) > 6 else 0, ha="right")
    axes[-1].set_xlabel(plot.xlabel)
    figure.suptitle(plot.title, fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None}, bbox_inches="tight")
    return buffer.getvalue()
