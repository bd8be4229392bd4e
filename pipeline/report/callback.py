"""Hydra callback that keeps the report current: after every job, and again when the run or sweep ends.

After a job only that job's part, the pages of its models and index.html are rebuilt (pipeline.report.build),
so a sweep's report costs the same per job whatever its length; the end of a run or sweep brings every part up
to date and rewrites index.jsonl in job order. Hydra calls ``on_job_end`` for failed jobs too, but skips
``on_multirun_end`` when any job failed, so the job hook does the real work. Parallel workers (joblib, submitit)
serialise their rebuilds with ``flock`` on a lock file in the report folder. A report problem is logged and
never fails the job.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.output.files import read_json, write_bytes
from pipeline.report.build import sync_report, update_job
from pipeline.report.jobs import JOB_STATUS, NoManifestError
from pipeline.status import (
    Interrupted,
    interrupted_code,
    job_state,
    last_job,
    last_job_owns_folder,
    late_stop,
    remember_exit,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: rebuild without a lock
    fcntl = None

log = logging.getLogger(__name__)
LOCK = ".report.lock"


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/.report.lock`` (shared by every process writing this report)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as handle:
        locked = fcntl is not None
        if locked:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            except OSError as exc:  # e.g. Lustre mounted without -o flock: go on unlocked (writes stay atomic)
                log.warning("report: cannot lock %s (%s); rebuilding without the lock", folder / LOCK, exc)
                locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def rebuild(folder: Path, job_dir: Path | None = None, announce: bool = True) -> Path | None:
    """Under the folder lock, update the report for one finished job (``job_dir``), else bring all of it up to
    date; log where it is (unless ``announce`` is off), never raise, on failure."""
    try:
        with folder_lock(folder):
            target = sync_report(folder) if job_dir is None else update_job(folder, job_dir)
        log.log(logging.INFO if announce else logging.DEBUG, "report: %s", target)
        return target
    except NoManifestError as exc:
        log.info("report not written: %s", exc)
    except Exception:  # the report is a by-product; it must never fail a job (logged with traceback)
        log.exception("report for %s could not be built", folder)
    return None


def merge_shards(folder: Path) -> None:
    """Finish the gathering methods of the sharded runs under ``folder``; a problem is said, never raised. Hydra
    has taken the jobs' log handlers down by now: the merge's lines go to stderr, as a job's do."""
    from pipeline.logs import ConsoleFormatter

    top, console = logging.getLogger("pipeline"), logging.StreamHandler(sys.stderr)
    console.setFormatter(ConsoleFormatter("%(message)s"))
    top.addHandler(console)
    top.propagate = False  # not also through Hydra's own handler, on stdout
    try:
        from pipeline.merge import merge_folder  # torch and the engine: only when a sweep ends

        if merge_folder(folder) != 0:
            remember_exit(1, "merge: a sharded run could not be merged (see above)")
    except (Interrupted, KeyboardInterrupt) as exc:
        name = getattr(exc, "name", "SIGINT")
        log.warning("merge: stopped by %s; run python -m pipeline.merge %s to finish it", name, folder)
        remember_exit(interrupted_code(exc) or 130, f"merge stopped by {name}")
    except Exception:  # like the report, the merge must not fail the sweep
        log.exception("merge of the sharded runs under %s failed", folder)
    finally:
        top.removeHandler(console)
        top.propagate = True


def _multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") in (RunMode.MULTIRUN, "MULTIRUN")


def _absolute(config: DictConfig, path: str) -> Path:
    """``path`` against the directory Hydra was started from (a job with chdir=True runs elsewhere)."""
    base = OmegaConf.select(config, "hydra.runtime.cwd") or os.getcwd()
    return Path(base, path)


def job_folder(config: DictConfig) -> Path | None:
    """The job's own output dir, if Hydra says which."""
    output = OmegaConf.select(config, "hydra.runtime.output_dir")
    return _absolute(config, output) if output else None


def report_folder(config: DictConfig) -> Path:
    """The sweep dir in a multirun, else the run's output dir."""
    if _multirun(config):
        return _absolute(config, str(config.hydra.sweep.dir))
    output = OmegaConf.select(config, "hydra.runtime.output_dir") or str(config.hydra.run.dir)
    return _absolute(config, output)


def record_late_stop(config: DictConfig) -> None:
    """A stop signal that came after the job had ended (while its report was written: the handler only noted it,
    so the report was finished): say so in one line, record the job as INTERRUPTED, and rebuild its entry."""
    signum = late_stop()
    job_dir = job_folder(config)
    if signum is None or job_dir is None:
        return
    name = signal.Signals(signum).name
    counts = (read_json(job_dir / "run.json") or {}).get("counts") or {}
    done = int(counts.get("ok", 0)) + int(counts.get("skipped", 0))
    reason = f"stopped by {name} while the report was written, after the job's work had ended"
    remember_exit(128 + signum, reason)
    log.warning(
        "%s: %d of %d artefacts in place in %s; the report was finished first",
        reason,
        done,
        int(counts.get("planned", done)),
        job_dir,
    )
    status = read_json(job_dir / JOB_STATUS)
    if status:
        status.update(status=job_state(128 + signum), exit_code=128 + signum, error=reason, stopped_by=name)
        payload = json.dumps(status, indent=2, ensure_ascii=False, default=str) + "\n"
        write_bytes(job_dir / JOB_STATUS, payload.encode())
        rebuild(report_folder(config), job_dir, announce=False)


class ReportCallback(Callback):
    """Writes the report (see pipeline.report.build) as jobs finish; switch off with ``report=false``."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = bool(enabled)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """Record how the job ended in its directory, then update the report for it (failed jobs included)."""
        if not self.enabled or not last_job_owns_folder():  # a job refused from another run's folder writes nothing
            return
        try:
            self._write_status(config, job_return)
        except Exception:  # see rebuild()
            log.exception("report: could not record the job status")
        rebuild(report_folder(config), job_folder(config))
        record_late_stop(config)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled and last_job_owns_folder():  # the job hook already said where the report is; say it once
            rebuild(report_folder(config), announce=False)
            record_late_stop(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Merge the sweep's sharded runs (pipeline.merge; also with report=false), then bring the whole report up
        to date."""
        merge_shards(report_folder(config))
        if self.enabled:
            rebuild(report_folder(config))

    @staticmethod
    def _write_status(config: DictConfig, job_return: Any) -> None:
        """job_status.json: COMPLETED, FAILED (artefacts failed, or the job crashed), REFUSED (bad input, exit 2)
        or INTERRUPTED (a stop signal), with the exit code and the one-line reason of a refusal or stop."""
        output = OmegaConf.select(config, "hydra.runtime.output_dir")
        if job_return is None or not output:
            return
        status = getattr(getattr(job_return, "status", None), "name", "UNKNOWN")
        data: dict[str, Any] = {"status": status, "overrides": list(getattr(job_return, "overrides", None) or [])}
        # JobReturn.return_value re-raises for a failed job; the value itself is kept in _return_value.
        value = getattr(job_return, "_return_value", None)
        if status == "FAILED":
            data["error"] = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
        elif status == "COMPLETED" and isinstance(value, int) and not isinstance(value, bool):
            data.update(status=job_state(value), exit_code=value)
            code, reason = last_job()  # the job ran in this process, just before this hook
            if reason and code == value:
                data["error"] = reason
        payload = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
        write_bytes(_absolute(config, output) / JOB_STATUS, payload.encode())
