"""The `slurm` preset's launcher: Hydra's submitit SLURM launcher, made to wait for every job and to name lost ones.

Hydra's launcher collects the jobs' results in order and gives up at the first job that ended without one (a job
cancelled with ``scancel``, killed for its memory, or lost with its node): the jobs after it are never waited
for, the sweep ends in a traceback and the report never hears of the lost job. Here every job is waited for; a
lost one gets a ``job_status.json`` (status ``LOST``, exit code 1, the SLURM state and how to resume) in its
folder and in the report, one error line naming it, and the sweep exits 1. Rerunning the same command resumes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import submitit
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf, open_dict, read_write

from pipeline.output.files import write_json
from pipeline.report.callback import rebuild, report_folder
from pipeline.report.jobs import JOB_STATUS
from pipeline.status import FAILED, LOST, remember_exit

log = logging.getLogger(__name__)
POLL_S = (2.0, 30.0)  # shortest and longest interval between two sacct calls while waiting for a job


class _Watched:
    """A submitted job whose ``results()`` records a lost job and stands in for its result instead of raising.

    It asks ``sacct`` every tenth of the time since submission (2 s to 30 s): submitit's own wait doubles its
    interval up to 10 minutes, so a sweep of short jobs would end up to twice as late as its jobs."""

    def __init__(self, job: Any, index: int, lost: Any) -> None:
        self.job, self.index, self.lost = job, index, lost
        self.since = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)

    def results(self) -> list[Any]:
        while not self.job.done(force_check=True):
            time.sleep(min(POLL_S[1], max(POLL_S[0], (time.monotonic() - self.since) / 10)))
        try:
            return self.job.results()
        except submitit.core.utils.UncompletedJobError as exc:
            return [self.lost(self.index, self.job, exc)]


class _Executor:
    """submitit's executor, handing back watched jobs."""

    def __init__(self, executor: Any, lost: Any) -> None:
        self.executor, self.lost = executor, lost

    def __getattr__(self, name: str) -> Any:
        return getattr(self.executor, name)

    def map_array(self, fn: Any, *iterable: Any) -> list[_Watched]:
        return [_Watched(job, i, self.lost) for i, job in enumerate(self.executor.map_array(fn, *iterable))]


@contextmanager
def _watching(lost: Any) -> Iterator[None]:
    """While Hydra's ``launch`` runs, ``submitit.AutoExecutor`` makes executors whose jobs are watched."""
    original = submitit.AutoExecutor
    submitit.AutoExecutor = lambda *args, **kwargs: _Executor(original(*args, **kwargs), lost)
    try:
        yield
    finally:
        submitit.AutoExecutor = original


class WatchingSlurmLauncher(submitit_launcher.SlurmLauncher):
    """Hydra's SLURM launcher (same parameters), waiting for every job; a lost job is recorded, not raised."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        def lost(index: int, job: Any, exc: BaseException) -> JobReturn:
            log.debug("job %d: %s", initial_job_idx + index, exc)
            return self._lost(initial_job_idx + index, list(job_overrides[index]), job)

        with _watching(lost):
            return super().launch(job_overrides, initial_job_idx)

    def _lost(self, num: int, overrides: list[str], job: Any) -> JobReturn:
        """Record job ``num`` as lost (its folder's job_status.json, the report, the exit code) and return its stand-in."""
        state = _state(job)
        reason = (
            f"lost: SLURM job {job.job_id} ended {state} without a result (cancelled, killed, or its node was lost); "
            "run the same command again to resume it"
        )
        log.error("job %d %s", num, reason)
        remember_exit(FAILED, reason)
        folder = self._job_dir(num, overrides)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            status = {"status": LOST, "exit_code": FAILED, "error": reason, "overrides": overrides}
            write_json(folder / JOB_STATUS, status)
            rebuild(report_folder(self.config), folder)
        # COMPLETED with exit code 1: Hydra would re-raise a FAILED job's error and skip the sweep's end hooks
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=FAILED)

    def _job_dir(self, num: int, overrides: list[str]) -> Path | None:
        """The job's output folder, as the job itself would have resolved it."""
        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with read_write(config.hydra), open_dict(config.hydra.job):
                config.hydra.job.num = num
            sweep = Path(str(config.hydra.sweep.dir), str(OmegaConf.select(config, "hydra.sweep.subdir")))
            base = OmegaConf.select(self.config, "hydra.runtime.cwd")
            return Path(base, sweep) if base else sweep
        except Exception as exc:  # noqa: BLE001 - the lost job is still said and counted
            log.warning("job %d: cannot tell its folder (%s)", num, exc)
            return None


def _state(job: Any) -> str:
    """SLURM's word for how a job ended (CANCELLED, OUT_OF_MEMORY, NODE_FAIL, ...), as submitit last saw it."""
    try:
        return str(job.state).split()[0] or "UNKNOWN"
    except Exception:  # noqa: BLE001 - only words for a message
        return "UNKNOWN"
