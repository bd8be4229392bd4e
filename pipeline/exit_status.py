"""Hydra callback for how a sweep ends: it stops after a stopped job, and exits with its worst job's code.

Each job returns its exit code instead of raising (so a refused job is one line, not a traceback, and the other
jobs still run) and writes it into its own ``run.json``. Jobs that ran in other processes (joblib, submitit)
are read back from those files when the sweep ends.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.report.jobs import JOB_STATUS
from pipeline.status import FAILED, LOST, Interrupted, job_state, remember_exit, stop_requested


def _runs_in_process(config: DictConfig) -> bool:
    """Whether this sweep's jobs run one after another in this very process (Hydra's basic launcher)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    return target.endswith("BasicLauncher")


def _read(path: Path, since: float) -> dict:
    """A job's JSON file written at or after ``since`` (else, or unreadable, {})."""
    try:
        if path.stat().st_mtime < since:
            return {}  # a job of an earlier sweep into the same folder
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sweep_outcomes(folder: Path, since: float) -> list[tuple[int, str]]:
    """(exit code, state) of every job under ``folder`` that ended at or after ``since``: from its ``run.json``,
    or, for a job lost on the cluster (it never wrote its exit code), from the launcher's ``job_status.json``."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        status = _read(Path(parent, JOB_STATUS), since) if JOB_STATUS in files else {}
        if status.get("status") == LOST:
            found.append((FAILED, LOST.lower()))
            continue
        code = _read(Path(parent, "run.json"), since).get("exit_code") if "run.json" in files else None
        if isinstance(code, int):
            found.append((code, job_state(code).lower()))
    return found


class ExitStatusCallback(Callback):
    """Registered first in conf/config.yaml, so its job-end hook runs after the report's (Hydra reverses them)."""

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1.0  # file times may be rounded down to the second

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """After a stop signal, start no further job of an in-process sweep (the stopped one is fully recorded)."""
        signum = stop_requested()
        multirun = OmegaConf.select(config, "hydra.mode") in (RunMode.MULTIRUN, "MULTIRUN")
        if signum is not None and multirun and _runs_in_process(config):
            raise Interrupted(signum)  # a BaseException: Hydra lets it through, run.py exits with its code

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        base = OmegaConf.select(config, "hydra.runtime.cwd") or os.getcwd()
        outcomes = sweep_outcomes(Path(base, str(config.hydra.sweep.dir)), self.started)
        for code, _ in outcomes:
            remember_exit(code)
        states = Counter(state for _, state in outcomes)
        if set(states) - {"completed"}:
            told = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
            # Hydra's own launcher lines are on the console now, not a job's log: say it plainly on stderr
            print(f"{len(outcomes)} jobs: {told} (each job's run.json says more)", file=sys.stderr)
