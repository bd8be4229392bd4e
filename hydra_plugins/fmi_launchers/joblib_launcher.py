"""hydra-joblib-launcher's launcher, with a worker that dies (kill -9, the out-of-memory killer) said in one line
and its jobs recorded (``pipeline.launchers.workers``). Hydra takes launchers only from the ``hydra_plugins`` package."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _Joblib

QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


class JoblibLauncher(_Joblib):
    """Joblib's launcher; when a worker dies, the sweep goes on to its end (report, exit code) instead of a traceback."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib.externals.loky.process_executor import BrokenProcessPool

        from pipeline.launchers.workers import record_dead_jobs

        # the semaphores of a killed worker are cleaned up by multiprocessing's resource tracker, which says so in
        # a warning at exit: noise after the one line below (the tracker takes its -W options from this process)
        if QUIET_TRACKER not in sys.warnoptions:
            sys.warnoptions.append(QUIET_TRACKER)
        try:
            return super().launch(job_overrides, initial_job_idx)
        except BrokenProcessPool:  # TerminatedWorkerError among them
            return record_dead_jobs(Path(str(self.config.hydra.sweep.dir)), job_overrides, initial_job_idx)
