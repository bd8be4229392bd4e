"""Sweeps on a real one-node SLURM cluster (cluster/start.sh): a job array, preemption, time limits, a lost job.

A session fixture starts the cluster (installing its Debian packages when missing) and stops it at the end; where
it cannot start (not root, no apt, no SLURM) every test here is skipped with the reason. Jobs use the tiny
``slow_energy`` plugin method (tests/slow_method.py), which takes a known time, so that a job is still running
when a signal comes, whatever the speed of the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE, ROOT
from PIL import Image
from test_shards import manifest, same_artefacts

from pipeline.exit_status import sweep_outcomes

CLUSTER = ROOT / "cluster"
START_TIMEOUT = 240  # s: a fresh machine installs munge, SLURM, slurmdbd and MariaDB first
SWEEP_TIMEOUT = 240  # s: the outer limit of one sweep
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]
TINY = [
    "models=squeezenet1_1",
    "weights=none",
    "layers=[last]",
    "plugins=[tests.slow_method]",
    "batch_size=1",
    "render_workers=1",
    "feature_maps.top_k=4",
]


@pytest.fixture(scope="session")
def slurm():
    """The local cluster, up for the session (left up if it was up before); skips with the reason otherwise."""
    if os.geteuid() != 0:
        pytest.skip("SLURM: cluster/start.sh needs root")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("SLURM: not installed and no apt-get to install it")
    try:
        started = subprocess.run(
            ["bash", str(CLUSTER / "start.sh")], capture_output=True, text=True, timeout=START_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"SLURM: cluster/start.sh did not finish in {START_TIMEOUT}s")
    if started.returncode != 0:
        pytest.skip(f"SLURM could not start: {(started.stderr.strip().splitlines() or ['no output'])[-1]}")
    yield
    if "already up" not in started.stderr:
        subprocess.run(["bash", str(CLUSTER / "stop.sh")], capture_output=True, timeout=60)


def photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def start(args: list[str], cwd: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """``python run.py ARGS`` in the background (network blocked, as run_cli); its stderr goes to a file."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OFFLINE), str(ROOT)]), "HYDRA_FULL_ERROR": "0"}
    log = cwd / f"{name}.err"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, stdout=err, stderr=err)
    return proc, log


def finish(proc: subprocess.Popen, log: Path, timeout: int = SWEEP_TIMEOUT) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the sweep ran past {timeout}s: {log.read_text()[-2000:]}") from None
    return code, log.read_text()


def wait_for(check, what: str, proc: subprocess.Popen, timeout: float = SWEEP_TIMEOUT):
    """``check()``'s first true value, polled while the sweep ``proc`` runs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no {what}: the sweep ended with {proc.wait()} or ran past {timeout}s")


def running_task(job: int, folder: Path) -> str | None:
    """The SLURM id (``<array>_<job>``) of sweep job ``job`` once it runs and has written an artefact."""
    lines = folder / str(job) / "manifest.jsonl"
    if not lines.is_file() or not lines.read_text().strip():
        return None
    ids = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True).stdout.split()
    return next((i for i in ids if i.endswith(f"_{job}")), None)


def scancel(*args: str) -> None:
    """``scancel ARGS``, again while SLURM answers "Job can not be altered now" (a step being set up)."""
    for _ in range(50):
        if subprocess.run(["scancel", *args], capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"scancel {' '.join(args)} failed")


def submitit_log(folder: Path, task: str) -> str:
    return "".join(p.read_text() for p in sorted((folder / ".submitit" / task).glob("*_log.*")))


def statuses(folder: Path, jobs: int) -> list[str]:
    return [json.loads((folder / str(j) / "job_status.json").read_text())["status"] for j in range(jobs)]


def one_ok_line_each(folder: Path, expected: int) -> None:
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    keys = {(r["method"], r["layer"], r["image"]) for r in lines}
    assert len(lines) == len(keys) == expected and all(r["status"] == "ok" for r in lines)


def test_the_launcher_waits_for_every_job_and_records_a_lost_one(compose_cfg, tmp_path):
    """Offline (submitit mocked): the second of three jobs ends without a result; the third is still waited for."""
    from unittest import mock

    import submitit
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.utils import instantiate

    cfg = compose_cfg(["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", "hydra.mode=MULTIRUN"], True)
    launcher = instantiate(cfg.hydra.launcher)
    context = mock.MagicMock()
    context.config_loader.load_sweep_config.side_effect = lambda config, overrides: config.copy()
    launcher.setup(hydra_context=context, task_function=lambda cfg: None, config=cfg)
    jobs = [mock.MagicMock(job_id=f"7_{i}", state="COMPLETED") for i in range(3)]
    for i, job in enumerate(jobs):
        job.results.return_value = [JobReturn(overrides=[f"models=m{i}"], status=JobStatus.COMPLETED, _return_value=0)]
    jobs[1].state = "CANCELLED by 0"
    jobs[1].results.side_effect = submitit.core.utils.UncompletedJobError("job 7_1 has not produced any output")
    with mock.patch("submitit.AutoExecutor") as executor_cls:
        executor_cls.return_value.map_array.return_value = jobs
        returns = launcher.launch([["models=m0"], ["models=m1"], ["models=m2"]], initial_job_idx=0)
    assert [r.return_value for r in returns] == [0, 1, 0] and all(j.results.called for j in jobs)
    status = json.loads((tmp_path / "1" / "job_status.json").read_text())
    assert status["status"] == "LOST" and status["overrides"] == ["models=m1"]
    assert status["error"].startswith("lost: SLURM job 7_1 ended CANCELLED without a result")
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "run.json").write_text(json.dumps({"exit_code": 0}))
    assert sorted(sweep_outcomes(tmp_path, 0.0)) == [(0, "completed"), (1, "lost")]


@pytest.mark.slow
def test_array_sweep_with_a_preempted_task_equals_the_basic_launcher(slurm, tmp_path):
    images = photos(tmp_path / "photos", 6)
    common = [*TINY, f"images=[{images}]", "methods=[feature_maps,slow_energy]", "+slow_energy.seconds=2"]
    sweep = ["-m", *common, "shard=0/3,1/3,2/3"]
    folder = tmp_path / "slurm"
    proc, log = start([*sweep, *SLURM, f"hydra.sweep.dir={folder}"], tmp_path, "slurm")
    task = wait_for(lambda: running_task(1, folder), "running task of job 1 with an artefact", proc)
    scancel("--signal=USR2", task)  # what a preemption sends
    code, err = finish(proc, log)
    assert code == 0, err[-3000:]
    assert statuses(folder, 3) == ["COMPLETED"] * 3
    assert "Requeued job" in submitit_log(folder, task)
    assert "resuming in" in (folder / "1" / "run.log").read_text()
    for job in range(3):
        one_ok_line_each(folder / str(job), 2 * 2)

    basic = tmp_path / "basic"
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *sweep, f"hydra.sweep.dir={basic}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(OFFLINE), str(ROOT)])},
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [str(j) for j in range(3)]
    same_artefacts(manifest(*(basic / j for j in jobs)), manifest(*(folder / j for j in jobs)))
    lines = (folder / "index.jsonl").read_text(encoding="utf-8").splitlines()
    assert len({json.loads(line)["png"] for line in lines}) == 3 * 4  # the report holds every picture


@pytest.mark.slow
def test_a_lost_task_is_named_and_a_rerun_resumes_it(slurm, tmp_path):
    images = photos(tmp_path / "photos", 6)
    folder = tmp_path / "sweep"
    # 6 s per image, so the task still runs long after its first artefact when scancel lands (with 2 s, a quiet
    # machine could finish the task first: the sweep then exited 0)
    command = ["-m", *SLURM, *TINY, f"images=[{images}]", "methods=[slow_energy]", "+slow_energy.seconds=6"]
    command += ["predictions=false", "shard=0/2,1/2", f"hydra.sweep.dir={folder}"]
    proc, log = start(command, tmp_path, "lost")
    task = wait_for(lambda: running_task(1, folder), "running task of job 1 with an artefact", proc)
    scancel(task)
    code, err = finish(proc, log)
    assert code == 1, err[-3000:]
    assert re.search(rf"job 1 lost: SLURM job {task} ended CANCELLED", err), err[-3000:]
    status = json.loads((folder / "1" / "job_status.json").read_text())
    assert status["status"] == "LOST" and status["exit_code"] == 1 and "run the same command again" in status["error"]
    assert statuses(folder, 2)[0] == "COMPLETED"
    assert "2 jobs: 1 completed, 1 lost" in err
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert "Failures: 0 artefact(s), 1 job(s)" in index and f"SLURM job {task} ended CANCELLED" in index

    proc, log = start(command, tmp_path, "rerun")
    code, err = finish(proc, log)
    assert code == 0, err[-3000:]
    assert statuses(folder, 2) == ["COMPLETED"] * 2
    assert "resuming in" in (folder / "1" / "run.log").read_text()
    for job in range(2):
        one_ok_line_each(folder / str(job), 3)


@pytest.mark.slow
def test_time_limits_requeue_and_resume_in_both_submitit_branches(slurm, tmp_path):
    """A job that outlives its time limit: SLURM sends USR2 ``signal_delay_s`` before it (at its next 30 s check:
    60 to 90 s after the start here, and the kill another minute later), submitit requeues the job and it
    resumes. timeout_min <= 50 counts it as a timeout (one of max_num_timeout), > 50 as a preemption. The job
    waits 12 s per photo before its first requeue only (slow_energy.first_run_only), so it outlives the limit
    once on any machine, and the rerun has a minute to finish; both branches run at once."""
    images = photos(tmp_path / "photos", 10)
    common = [*TINY, f"images=[{images}]", "methods=[slow_energy]", "predictions=false"]
    common += ["+slow_energy.seconds=12", "+slow_energy.first_run_only=true"]
    branches = {"timed-out": (2, 60), "preempted": (51, 51 * 60 - 60)}  # timeout_min, signal_delay_s
    runs = {}
    for case, (minutes, delay) in branches.items():
        folder = tmp_path / case
        limits = [f"hydra.launcher.timeout_min={minutes}", f"hydra.launcher.signal_delay_s={delay}"]
        runs[case] = (folder, *start(["-m", *SLURM, *limits, *common, f"hydra.sweep.dir={folder}"], tmp_path, case))
    for case, (folder, proc, log) in runs.items():
        code, err = finish(proc, log)
        assert code == 0, err[-3000:]
        assert statuses(folder, 1) == ["COMPLETED"]
        task = next(p.name for p in (folder / ".submitit").iterdir() if re.fullmatch(r"\d+(_0)?", p.name))
        said = submitit_log(folder, task)
        assert f"this job is {case}" in said, said[-2000:]
        assert "this job is " + ("preempted" if case == "timed-out" else "timed-out") not in said
        # max_num_timeout is 3: a timeout uses one up, a preemption none (the log says each line twice)
        left = set(re.findall(r"Requeued job \S+ \((\d+) remaining timeouts\)", said))
        assert left == {"2" if case == "timed-out" else "3"}
        assert "resuming in" in (folder / "0" / "run.log").read_text()
        one_ok_line_each(folder / "0", 10)
