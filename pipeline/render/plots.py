"""A DepthPlot to PNG bytes with matplotlib (an Agg canvas of its own, no pyplot state, safe on render threads)."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

from pipeline.methods import base

# matplotlib is not thread-safe (its mathtext parser fails when two render threads draw tick labels at once)
_LOCK = threading.Lock()


def depth_plot_png(plot: base.DepthPlot, dpi: int = 100) -> bytes:
    """One panel per statistic, stacked, sharing the depth axis (conv layer index)."""
    with _LOCK:
        return _draw(plot, dpi)


def line_plot_png(plot: base.LinePlot, dpi: int = 100) -> bytes:
    """Named series in stacked panels, against ``plot.x`` (its ticks labelled) or each over [0, 1]."""
    with _LOCK:
        return _draw_lines(plot, dpi)


def _panels(panels: Sequence, height: float, dpi: int):
    """A figure of stacked panels sharing the x axis, each titled, its axes and its series handed back."""
    # imported here: only runs that make plots pay for matplotlib's figure machinery at start-up
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, height * len(panels) + 0.6), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (title, _) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
    return figure, [(ax, series) for ax, (_, series) in zip(axes, panels, strict=True)]


def _png(figure, title: str, **save) -> bytes:
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None}, **save)
    return buffer.getvalue()


def _draw(plot: base.DepthPlot, dpi: int) -> bytes:
    from matplotlib.ticker import MaxNLocator

    figure, panels = _panels(plot.panels, 2.2, dpi)
    for (ax, series), (title, _) in zip(panels, plot.panels, strict=True):
        for name, values in series.items():
            ax.plot(plot.depth, values, marker="o", markersize=2.5, linewidth=1.2, label=name)
        if title in plot.log_panels:
            ax.set_yscale("log")
        if len(series) > 1:
            ax.legend(fontsize=8, loc="best")
    last = panels[-1][0]
    last.set_xlabel("conv layer index (input → output)")
    last.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(figure, plot.title)


def _draw_lines(plot: base.LinePlot, dpi: int) -> bytes:
    figure, panels = _panels(plot.panels, 2.6, dpi)
    for ax, series in panels:
        for name, values in series.items():
            x = plot.x if plot.x is not None else [i / max(1, len(values) - 1) for i in range(len(values))]
            marker = "o" if plot.x is not None and len(values) <= 40 else None
            ax.plot(x, values, marker=marker, markersize=3, linewidth=1.2, label=name)
        if plot.ylim is not None:
            ax.set_ylim(*plot.ylim)
        if series:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    last = panels[-1][0]
    if plot.ticks and plot.x is not None:
        last.set_xticks(list(plot.x), list(plot.ticks), rotation=45 if len(plot.ticks) > 6 else 0, ha="right")
    last.set_xlabel(plot.xlabel)
    return _png(figure, plot.title, bbox_inches="tight")
