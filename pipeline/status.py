"""How a run ends: exit codes, the job states they stand for, and a clean stop on SIGINT / SIGTERM.

Exit codes: 0 every artefact is in place, 1 some artefacts failed, 2 the input was refused before any work,
128 + N stopped by signal N (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP: a closed terminal or ssh session). ``job_status.json`` and ``run.json`` name the
same outcomes in words, from ``job_state``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

OK, FAILED, REFUSED = 0, 1, 2
LOST = "LOST"  # job_status.json of a cluster job that ended without a result (pipeline.launchers.slurm)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal arrived (raised by ``raise_if_stopped``; a BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` on the way takes it for a failed artefact)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {self.name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


def interrupted_code(exc: BaseException) -> int | None:
    """The exit code for an exception that means "stopped from outside", else None."""
    if isinstance(exc, Interrupted):
        return exc.code
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return None


def job_state(code: int) -> str:
    """The word ``job_status.json`` uses for an exit code."""
    if code > 128:
        return "INTERRUPTED"
    return {OK: "COMPLETED", FAILED: "FAILED", REFUSED: "REFUSED"}.get(code, "FAILED")


def worst(a: int, b: int) -> int:
    """The exit code that says more of two (interrupted > refused > failed > ok): a sweep exits with its worst job."""
    return max(a, b, key=lambda code: (code > 128, code))


_EXIT: dict = {"code": OK, "last": (OK, None), "owns_folder": True}


def late_stop() -> int | None:
    """A stop signal that came after the last job had ended otherwise (while its report was written), or None."""
    signum = stop_requested()
    return signum if signum is not None and _EXIT["code"] <= 128 else None


def remember_exit(code: int, reason: str | None = None, owns_folder: bool = True) -> None:
    """Fold one job's exit code into this process's (the worst of all its jobs), and keep its one-line reason;
    ``owns_folder`` is False for a job refused because its folder holds another run (nothing may be written)."""
    _EXIT["code"] = worst(_EXIT["code"], code)
    _EXIT["last"] = (code, reason)
    _EXIT["owns_folder"] = owns_folder


def new_job() -> None:
    """A job starts: until it says otherwise, its folder is its own."""
    _EXIT["owns_folder"] = True


def last_job_owns_folder() -> bool:
    """False when the last job was refused because its folder belongs to another run: its job-end hooks must then
    write nothing there (no job_status.json, no report)."""
    return _EXIT["owns_folder"]


def last_job() -> tuple[int, str | None]:
    """The exit code and one-line reason of the job this process ran last (Hydra's job-end hooks run in it too)."""
    return _EXIT["last"]


def exit_code() -> int:
    """What ``run.py`` exits with once Hydra is done: the worst exit code of the jobs run or seen."""
    return _EXIT["code"]


class _Signals:
    """The stop signals this process has received."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def handler(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        if len(self.received) > 1:  # asked twice: stop now, as SIGKILL would (files stay whole, see below)
            os._exit(128 + signum)


_SIGNALS = _Signals()


def stop_requested() -> int | None:
    """The first stop signal this process received (it stays stopped: a sweep starts no further job), or None."""
    return _SIGNALS.received[0] if _SIGNALS.received else None


def raise_if_stopped() -> None:
    """A point where the run may stop: raise ``Interrupted`` if a stop signal has arrived.

    The handler itself only notes the signal. An exception raised wherever the main thread happens to be (as
    KeyboardInterrupt is) can leave a library's lock held (tqdm's ``refresh`` has no ``finally``), and the
    cleanup would then wait on it forever; the engine calls this between pieces of work instead (before each
    method output is queued, each batch and each model), which is often enough to stop within seconds.
    """
    if _SIGNALS.received:
        raise Interrupted(_SIGNALS.received[0])


_KEEP = {"handlers": False}


def keep_stop_handlers() -> None:
    """This process is the CLI: the handlers ``stop_on_signals`` installs stay for the rest of the process, so a
    stop while Hydra's job-end hooks write the report is noted (and the report finished) rather than fatal."""
    _KEEP["handlers"] = True


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Note SIGINT, SIGTERM and SIGHUP while the block runs (``raise_if_stopped`` acts on them).

    A signal someone else handles (submitit's SIGTERM, which it logs and ignores so that its USR2 requeue can
    run) or ignores (SIGINT in a background job) is left alone. A second signal ends the process at once, as
    SIGKILL would: every file is still whole (writes are atomic) and a torn last manifest line is skipped when
    it is read.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            current = signal.getsignal(signum)
            if current in (signal.SIG_DFL, signal.default_int_handler):
                previous[signum] = current
                signal.signal(signum, _SIGNALS.handler)
    try:
        yield
    finally:
        for signum, current in previous.items():
            if not _KEEP["handlers"]:
                signal.signal(signum, current)
