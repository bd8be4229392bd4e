"""The progress bar: planned work weighed by what it costs, so the ETA holds when cheap and dear artefacts mix.

A run's time goes into forwards (one per image of each batch), backwards (one set per artefact of a method
that needs gradients) and pictures (one per artefact written). The costs come from what a method declares
(``needs``, ``cost``), never from its name.

The engine and the render threads only add to counters; one thread of the bar's own draws it twice a second.
So no other thread ever waits on tqdm's lock, and a stop signal's exception in the main thread can never
leave that lock held (tqdm's ``refresh`` releases it without ``finally``).
"""

from __future__ import annotations

import threading

from tqdm import tqdm

from pipeline.methods.base import Method

# Relative costs, in units of one picture drawn and encoded, from the README's benchmark of the standard sweep on
# 2 CPU cores: about 0.05 s per picture (10 s of CPU for 190 PNGs), 0.15 s per image forward (alexnet, vgg16,
# resnet18) and 0.6 s per guided-backprop artefact (8 targets batched over the images; 76 of them in the 47 s floor).
# Whole numbers, so the bar's count never passes its total by a rounding error.
PICTURE = 1
FORWARD = 3  # per image
BACKWARD = 12  # per artefact of a method with needs.gradients


class _Bar(tqdm):
    monitor_interval = 0  # tqdm's monitor thread would take its lock too; this bar is redrawn by its own thread


def compute_cost(method: Method) -> int:
    """What making one artefact of ``method`` costs before its picture, beyond the shared forward."""
    return round(BACKWARD * method.cost())


class Progress:
    """A bar over cost units with an artefact count beside it. ``advance`` and ``at_model`` are thread-safe and
    never block on drawing; ``close`` draws the final state and ends the bar's thread."""

    def __init__(self, total: int, artefacts: int, done: int = 0, interval: float = 0.5) -> None:
        self.total, self.artefacts = max(int(total), 0), artefacts
        self._cost, self._done, self._model = 0, done, ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = threading.Event()
        self._thread = threading.Thread(target=self._draw, args=(interval,), name="progress", daemon=True)
        self._thread.start()

    def advance(self, cost: int, artefacts: int = 0) -> None:
        """``cost`` units of planned work are done, finishing ``artefacts`` artefacts."""
        with self._lock:
            self._cost += cost
            self._done += artefacts

    def at_model(self, name: str) -> None:
        with self._lock:
            self._model = name

    def _state(self) -> tuple[int, str]:
        with self._lock:
            model = f" · {self._model}" if self._model else ""
            return min(self._cost, self.total), f"{self._done}/{self.artefacts} artefacts{model}"

    def _draw(self, interval: float) -> None:
        cost, desc = self._state()
        bar = _Bar(
            total=self.total or 1,
            desc=desc,
            disable=self.total == 0,  # everything was already there
            dynamic_ncols=True,
            mininterval=0,
            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        )
        try:
            while True:
                stopping = self._stop.wait(interval)
                cost, desc = self._state()
                bar.set_description_str(desc, refresh=False)
                bar.update(cost - bar.n)
                if stopping:
                    return
        finally:
            bar.close()
            self._drawn.set()

    def close(self, timeout: float = 5.0) -> None:
        """Draw the last state and end the bar (waiting at most ``timeout`` seconds for its thread)."""
        self._stop.set()
        self._drawn.wait(timeout)
