"""The progress bar: planned work weighed by what it costs, so the ETA holds when cheap and dear artefacts mix.

A run's time goes into forwards (one per image of each batch), backwards (one set per artefact of a method
that needs gradients) and pictures (one per artefact written). The costs come from what a method declares
(``needs``), never from its name.
"""

from __future__ import annotations

import threading

from tqdm import tqdm

from pipeline.methods.base import Method

# Relative costs, in units of one picture drawn and encoded, from the README's benchmark of the standard sweep on
# 2 CPU cores: about 0.05 s per picture (10 s of CPU for 190 PNGs), 0.15 s per image forward (alexnet, vgg16,
# resnet18) and 0.6 s per guided-backprop artefact (8 targets batched over the images; 76 of them in the 47 s floor).
PICTURE = 1.0
FORWARD = 3.0  # per image
BACKWARD = 12.0  # per artefact of a method with needs.gradients


def compute_cost(method: Method) -> float:
    """What making one artefact of ``method`` costs before its picture, beyond the shared forward."""
    return BACKWARD if method.needs.gradients else 0.0


class Progress:
    """A bar over cost units with an artefact count beside it; thread-safe (render threads report pictures)."""

    def __init__(self, total: float, artefacts: int, done: int = 0) -> None:
        self._lock = threading.Lock()
        self.artefacts, self.done, self.model = artefacts, done, ""
        self.bar = tqdm(
            desc=f"{done}/{artefacts} artefacts",
            total=max(total, 1e-9),
            disable=total <= 0,  # everything was already there
            dynamic_ncols=True,
            mininterval=0.5,
            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        )
        self._postfix()

    def _postfix(self) -> None:
        model = f" · {self.model}" if self.model else ""
        self.bar.set_description_str(f"{self.done}/{self.artefacts} artefacts{model}", refresh=False)

    def at_model(self, name: str) -> None:
        with self._lock:
            self.model = name
            self._postfix()
            self.bar.refresh()

    def advance(self, cost: float, artefacts: int = 0) -> None:
        """``cost`` units of planned work are done, finishing ``artefacts`` artefacts."""
        with self._lock:
            self.done += artefacts
            self._postfix()
            if cost:
                self.bar.update(min(cost, self.bar.total - self.bar.n))

    def close(self) -> None:
        with self._lock:
            self.bar.close()
