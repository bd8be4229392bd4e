"""For the joblib launcher (``hydra_plugins/fmi_launchers``): when a worker process dies (kill -9, the OOM killer): one
line instead of joblib's traceback, the jobs it cut short recorded as failed (their run.json is no longer left
``running``), and the sweep's end (exit code, report) run as for any failed job. A rerun resumes them."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

from pipeline.output.files import read_json, write_bytes
from pipeline.status import FAILED, remember_exit

log = logging.getLogger(__name__)
KILLED = (
    "its process ended abruptly (killed: kill -9, or the out-of-memory killer); run the same command again "
    "(same hydra.sweep.dir) to resume it"
)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid == os.getpid():
        return isinstance(pid, int)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _dump(data: dict) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def record_dead_jobs(sweep_dir: Path, job_overrides: Sequence[Sequence[str]], first: int) -> list[JobReturn]:
    """After a worker died: each job of this batch gets its exit code from its run.json; one left ``running`` by a
    process that is gone is recorded as failed (run.json and job_status.json), one never started fails too."""
    returns, cut, unstarted = [], [], []
    for idx, overrides in enumerate(job_overrides):
        job_dir = sweep_dir / str(first + idx)
        info = read_json(job_dir / "run.json")
        deadline = time.monotonic() + 5.0  # the pool takes a moment to end its other workers
        while info.get("status") == "running" and _alive(info.get("pid")) and time.monotonic() < deadline:
            time.sleep(0.2)
            info = read_json(job_dir / "run.json")
        code = info.get("exit_code")
        if info.get("status") == "running":
            code = FAILED
            info.update(status="crashed", exit_code=code, error=KILLED)
            write_bytes(job_dir / "run.json", _dump(info))
            status = {"status": "FAILED", "overrides": list(overrides), "exit_code": code, "error": KILLED}
            write_bytes(job_dir / "job_status.json", _dump(status))
            cut.append(first + idx)
        elif not isinstance(code, int):
            code = FAILED
            unstarted.append(first + idx)
        remember_exit(code)
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=code)
        returns.append(ret)
    said = [f"job {', '.join(map(str, cut))} cut short"] if cut else []
    said += [f"{len(unstarted)} job(s) not run ({', '.join(map(str, unstarted))})"] if unstarted else []
    print(  # on a line of its own: the dead worker's progress bar was left without its newline
        f"\nerror: a worker process died (killed, or out of memory): {'; '.join(said) or 'no job lost'}; run the same "
        f"command again with hydra.sweep.dir={sweep_dir} to resume",
        file=sys.stderr,
    )
    return returns
