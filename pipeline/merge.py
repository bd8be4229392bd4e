"""``python -m pipeline.merge SWEEP_DIR``: finish the gathering methods of every sharded run in a sweep.

The shard jobs of one run are those whose overrides differ only in ``shard=i/n``. Each saved its gathered states
as partials (``engine.partials``); the merge folds them (``Method.merge_states``), finishes the methods with shard
0's settings over the run's full image list, and writes their per-layer artefacts, with manifest lines, into
shard 0's folder, which owns every per-layer artefact of the run. It also runs at a sweep's end, before the
report (``report.callback``). A second merge makes nothing already there.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from pipeline.errors import UserError
from pipeline.report.jobs import find_job_dirs, job_overrides
from pipeline.report.shards import shard_of
from pipeline.status import FAILED, OK, REFUSED, Interrupted, interrupted_code, stop_on_signals

log = logging.getLogger("pipeline.merge")
CONFIG = "config.resolved.yaml"


def sharded_runs(folder: Path) -> dict[tuple[tuple[str, ...], int], dict[int, Path]]:
    """The sharded runs under ``folder``: (overrides but ``shard``, n) -> shard index -> job folder."""
    runs: dict[tuple[tuple[str, ...], int], dict[int, Path]] = {}
    for job_dir in find_job_dirs(folder):
        found = shard_of(job_overrides(job_dir))
        if found is not None:
            rest, i, n = found
            runs.setdefault((rest, n), {}).setdefault(i, job_dir)
    return runs


def merge_folder(folder: Path) -> int:
    """Merge every sharded run under ``folder``; its exit status: 0, 1 when a run could not be merged (said in one
    line each: a shard missing, a method failing)."""
    runs = sharded_runs(folder)
    if not runs:
        return OK
    from pipeline.config import settings_from  # torch and the engine: only when there is something to merge
    from pipeline.engine.shards import merge_run, mergeable

    code = OK
    for (overrides, n), shards in runs.items():
        name = " ".join(overrides) or "(no overrides)"
        missing = [i for i in range(n) if i not in shards]
        try:
            if 0 not in shards or not (shards[0] / CONFIG).is_file():
                raise UserError(f"merge: {name}: shard 0/{n} has not run (no {CONFIG}); run it, then merge.")
            settings = settings_from(OmegaConf.create(yaml.safe_load((shards[0] / CONFIG).read_text())))
            if not mergeable(settings):
                continue
            if missing:
                folders = ", ".join(f"{i}/{n}" for i in missing)
                raise UserError(f"merge: {name}: shard(s) {folders} have not run; run them, then merge.")
            started = time.perf_counter()
            written, failed = merge_run(settings, [shards[i] for i in range(n)])
            if failed:
                raise UserError(f"{failed} merged artefact(s) failed, each listed with its reason in {shards[0]}")
        except UserError as exc:
            log.error("%s", str(exc) if str(exc).startswith("merge: ") else f"merge: {name}: {exc}")
            code = FAILED
            continue
        seconds = time.perf_counter() - started
        log.info(
            "merge: %s: %d shard(s) merged into %s, %d artefact(s) written in %.1fs",
            name,
            n,
            shards[0],
            written,
            seconds,
        )
    return code


def main(argv: list[str] | None = None) -> int:
    """Merge the sharded runs of the folder given on the command line, then bring its report up to date."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.merge",
        description="Finish the gathering methods (top_patches, feature_viz) of the sharded runs (shard=i/n) of a "
        "sweep folder: merge the shards' partial states and write the per-layer artefacts into shard 0's folder.",
    )
    parser.add_argument("folder", type=Path, help="a multirun sweep directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.folder.is_dir():
        print(f"error: merge: {args.folder} is not a directory", file=sys.stderr)
        return REFUSED
    with stop_on_signals():
        try:
            code = merge_folder(args.folder)
        except (Interrupted, KeyboardInterrupt) as exc:
            log.warning("merge: stopped by %s; run it again to finish", getattr(exc, "name", "SIGINT"))
            return interrupted_code(exc) or FAILED
    from pipeline.report.build import sync_report  # the report reads shard 0's new manifest lines

    try:
        log.info("report: %s", sync_report(args.folder))
    except Exception as exc:  # noqa: BLE001 - the report is a by-product; the merge's status stands
        log.warning("report not brought up to date: %s", exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
