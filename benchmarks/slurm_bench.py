"""The local SLURM cluster (cluster/start.sh) against the basic launcher: what a job costs on SLURM.

Usage (root, from the repository root, with the project's virtualenv):

    python benchmarks/slurm_bench.py                       # 3-job sweep, 8 shards of 400 photos
    python benchmarks/slurm_bench.py --images 40 --json slurm.json
    python benchmarks/slurm_bench.py --only shards --gather --images 16   # with a merged gathering method

Figures, each run with both launchers in one go:

- ``sweep``: 3 jobs (alexnet, resnet18, efficientnet_lite0; random weights, last conv, feature maps and
  Grad-CAM, one photo) as one array against Hydra's basic launcher (one process, jobs in turn).
- ``shards``: efficientnet_lite0 (its real weights), last 3 conv layers, feature maps and Grad-CAM, ``--images``
  photos (copies of the sample photos under new names) split with ``shard=i/8`` over 8 array tasks, against the
  same 8 shards run by the basic launcher. One task is preempted (``scancel --signal=USR2``) once it has written
  an artefact: the time from the signal to its resume (the rerun's ``resuming in`` line) is measured. With
  ``--gather`` the shards also run ``top_patches``: each saves partial states, and the sweep's end merges them
  into shard 0 (``merge_s``, from the merge's own line).

Per job: wall time (``sacct`` Elapsed on SLURM), the engine's own seconds (``run.json``), and their difference,
the overhead a job pays (process start, imports, model load, submitit); peak memory per task (``sacct`` MaxRSS;
the basic launcher's whole process from ``getrusage``). On a 2-core node SLURM runs two 1-CPU tasks at a time:
the overhead per job, not the wall time, is what a user of a real cluster pays.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from bench import machine, photo  # noqa: E402

SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=3",
    "hydra.launcher.timeout_min=60",
]
COMMON = ["methods=[feature_maps,grad_cam]", "render_workers=1", "device=cpu"]


def run(args: list[str], cwd: Path, preempt: int | None = None) -> dict:
    """``python run.py ARGS`` as a whole process: wall time and the peak RSS of its largest child process; with
    ``preempt``, USR2 to that sweep job's SLURM task once it has written an artefact (the time is returned)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    log = cwd / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, stderr=err)
    signalled = None
    if preempt is not None:
        folder = Path(next(a for a in args if a.startswith("hydra.sweep.dir=")).split("=", 1)[1])
        signalled = _preempt(preempt, folder, proc)
    proc.wait()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"run.py exited {proc.returncode}: {log.read_text()[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    merged = re.findall(r"merge: .* written in ([\d.]+)s", log.read_text())  # the sweep's end: gathering methods
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak / 1024, 1) if peak > before else None,
        "signal": signalled,
        "merge_s": float(merged[-1]) if merged else None,
    }


def _preempt(job: int, folder: Path, proc: subprocess.Popen) -> float | None:
    """USR2 to one running instance of the task, once: scancel may say "Job can not be altered now" while a step
    starts and still deliver, so a retry goes only to the same instance (same start time), never to its requeue
    (which would die of the signal before submitit's handler is set)."""
    first, started = None, None
    while proc.poll() is None:
        manifest = folder / str(job) / "manifest.jsonl"
        if manifest.is_file() and manifest.read_text().strip():
            out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %S"], capture_output=True, text=True).stdout
            task = next((line.split() for line in out.splitlines() if line.split()[0].endswith(f"_{job}")), None)
            if task and started not in (None, task[1]):
                return first  # requeued since the first try: that one was delivered
            if task:
                started, first = task[1], first or time.time()
                if subprocess.run(["scancel", "--signal=USR2", task[0]]).returncode == 0:
                    return first
        time.sleep(0.1)
    return first


def jobs(folder: Path) -> list[dict]:
    """Each job of a sweep folder: its engine seconds (run.json) and, for SLURM, sacct's elapsed and MaxRSS."""
    found = []
    for job in sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        info = json.loads((job / "run.json").read_text())
        found.append({"job": int(job.name), "engine_s": info.get("seconds"), "artefacts": info["counts"]["ok"]})
    submitit = folder / ".submitit"
    tasks = [p.name for p in submitit.iterdir() if re.fullmatch(r"\d+_\d+", p.name)] if submitit.is_dir() else []
    if tasks:
        array = tasks[0].split("_")[0]
        out = subprocess.run(
            ["sacct", "-n", "-P", "-j", array, "-o", "JobID,ElapsedRaw,MaxRSS,State"], capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            task, elapsed, rss, _state = line.split("|")
            base, _, step = task.partition(".")
            if "_" not in base:
                continue
            entry = found[int(base.split("_")[1])]
            if not step:
                entry["slurm_elapsed_s"] = int(elapsed)
            elif step == "0" and rss:
                entry["max_rss_mb"] = round(_bytes(rss) / 2**20, 1)
    return found


def _bytes(text: str) -> float:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def resumed_after(folder: Path, job: int, signalled: float | None) -> float | None:
    """Seconds from the USR2 to the requeued task's ``resuming in`` line (run.log timestamps)."""
    if signalled is None:
        return None
    for line in (folder / str(job) / "run.log").read_text().splitlines():
        if "resuming in" in line:
            stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            return round(stamp - signalled, 1)
    return None


def figure(name: str, overrides: list[str], work: Path, preempt: int | None = None) -> dict:
    result = {}
    for launcher, extra in (("basic", []), ("slurm", SLURM)):
        folder = work / f"{name}-{launcher}"
        measured = run(["-m", *extra, *overrides, f"hydra.sweep.dir={folder}"], work, preempt if extra else None)
        per_job = jobs(folder)
        engine = sum(j["engine_s"] or 0 for j in per_job)
        entry = {**measured, "jobs": per_job, "engine_s": round(engine, 2)}
        if launcher == "slurm":
            overheads = [j["slurm_elapsed_s"] - j["engine_s"] for j in per_job if "slurm_elapsed_s" in j]
            entry["overhead_per_job_s"] = round(sum(overheads) / len(overheads), 1) if overheads else None
            if preempt is not None:
                entry["requeue_to_resume_s"] = resumed_after(folder, preempt, measured["signal"])
        else:
            entry["overhead_per_job_s"] = round((measured["wall_s"] - engine) / len(per_job), 1)
        result[launcher] = entry
        print(f"{name} {launcher}: {json.dumps({k: v for k, v in entry.items() if k != 'jobs'})}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="photos for the shard figure (400)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--only", nargs="+", choices=["sweep", "shards"], default=["sweep", "shards"])
    parser.add_argument("--gather", action="store_true", help="shards also run top_patches (merged at the end)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    subprocess.run(["bash", str(ROOT / "cluster" / "start.sh")], check=True)
    cluster_s = round(time.perf_counter() - started, 1)
    work = Path(tempfile.mkdtemp(prefix="slurm-bench-"))
    env_path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONPATH"] = env_path
    try:
        photos = work / "photos"
        photos.mkdir()
        samples = [photo(n) for n in ("grace_hopper", "chelsea", "coffee")]
        for i in range(args.images):
            source = samples[i % len(samples)]
            shutil.copy(source, photos / f"img{i:04d}{source.suffix}")
        sweep = ["models=alexnet,resnet18,efficientnet_lite0", "weights=none", "layers=[-1]", *COMMON]
        sweep.append(f"images=[{samples[0]}]")
        shards = ",".join(f"{i}/{args.shards}" for i in range(args.shards))
        batch = max(1, args.images // (2 * args.shards))  # shards are cut between batches: two or more each
        split = ["models=efficientnet_lite0", "layers=[-3,-2,-1]", *COMMON, f"images=[{photos}]", f"batch_size={batch}"]
        if args.gather:  # a method that gathers over every image: shards save partials, the sweep's end merges them
            split = [
                o.replace("methods=[feature_maps,grad_cam]", "methods=[feature_maps,grad_cam,top_patches]")
                for o in split
            ]
        results = {"machine": machine(), "cluster_start_s": cluster_s, "images": args.images, "batch_size": batch}
        if "sweep" in args.only:
            results["sweep"] = figure("sweep", sweep, work)
        if "shards" in args.only:
            results["shards"] = figure("shards", [*split, f"shard={shards}"], work, preempt=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
