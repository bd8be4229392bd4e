"""The plain function behind ``run.py``: config in, pictures and manifest out, a clear exit status.

Every outcome is said once, in one line, through logging (the console shows the message on stderr, run.log
keeps it with a timestamp); stdout carries only ``list_layers`` tables. The exit codes are those of
``pipeline.status``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config import default_output_dir, model_name, settings_from
from pipeline.engine import run
from pipeline.errors import NotOurFolder, UserError
from pipeline.output.files import write_json
from pipeline.plan import make_plan
from pipeline.status import (
    REFUSED,
    Interrupted,
    interrupted_code,
    new_job,
    raise_if_stopped,
    remember_exit,
    stop_on_signals,
)

log = logging.getLogger("pipeline")


def _multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _job() -> str:
    """In a multirun, which job a line is about ("job 3: "); nothing in a single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        config = HydraConfig.get()
        return f"job {config.job.num}: " if config.mode == RunMode.MULTIRUN else ""
    except ValueError:
        return ""


def main(cfg: DictConfig) -> int:
    """Run one job and return its exit code (also folded into ``pipeline.status.exit_code`` for run.py).

    Refusals and stops are said in one line and returned, never raised, also in a multirun: Hydra then runs
    its end-of-job callbacks (job status, report) and the sweep's other jobs.
    """
    reason, owns = None, True
    new_job()
    with stop_on_signals():
        try:
            code, reason = _main(cfg)
        except NotOurFolder as exc:  # the folder's records are another run's: say it on the console only
            code, reason, owns = REFUSED, str(exc), False
            _detach_folder_logs(default_output_dir())
            log.error("%s%s", _job(), exc)
        except UserError as exc:
            code, reason = REFUSED, str(exc)
            log.error("%s%s", _job(), exc)
            _leave_note(cfg, {"status": "refused", "exit_code": code, "error": reason})
        except (Interrupted, KeyboardInterrupt) as exc:
            code, reason = interrupted_code(exc), f"stopped by {getattr(exc, 'name', 'SIGINT')}"
            _say_stopped(exc, code, cfg)
    remember_exit(code, reason, owns_folder=owns)
    return code


def _detach_folder_logs(root: Path) -> None:
    """Stop logging into ``root`` (its run.log belongs to the run that owns the folder)."""
    top = logging.getLogger()
    for handler in list(top.handlers):
        name = getattr(handler, "baseFilename", None)
        if name and Path(name).resolve().parent == root.resolve():
            top.removeHandler(handler)
            handler.close()


def _say_stopped(exc: BaseException, code: int, cfg: DictConfig) -> None:
    summary = getattr(exc, "summary", None)
    name = getattr(exc, "name", "SIGINT")
    if summary is None:  # stopped before any work: nothing to resume
        log.warning("%sstopped by %s before any artefact was made", _job(), name)
        _leave_note(cfg, {"status": "interrupted", "exit_code": code, "stopped_by": name})
        return
    log.warning(
        "%sstopped by %s: %d of %d artefacts in place in %s; run the same command again to resume",
        _job(),
        name,
        summary.ok + summary.skipped,
        summary.planned,
        default_output_dir(),
    )


def _leave_note(cfg: DictConfig, info: dict) -> None:
    """A small run.json for a job that made nothing, when Hydra made its folder (never over an earlier run's)."""
    root = default_output_dir()
    if not root.is_dir() or (root / "manifest.jsonl").exists():
        return
    try:
        info["config"] = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - the config itself may be what was refused
        info["config"] = None
    write_json(root / "run.json", info)


def _hydra_files(cfg: DictConfig) -> dict[str, bytes]:
    """Hydra's own record of the job (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``), which
    conf/config.yaml keeps Hydra from writing (``hydra.output_subdir: null``) so that it is written only once the
    folder is known to be this run's: a refused rerun must not rewrite another run's record."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra = HydraConfig.get()
    except ValueError:
        return {}
    if hydra.output_subdir is not None:  # the user asked Hydra to write it, where they chose
        return {}
    return {
        ".hydra/config.yaml": OmegaConf.to_yaml(cfg).encode(),
        ".hydra/hydra.yaml": OmegaConf.to_yaml({"hydra": hydra}).encode(),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(list(hydra.overrides.task)).encode(),
    }


def _main(cfg: DictConfig) -> tuple[int, str | None]:
    """The job itself: its exit code, and for a run with failed artefacts the line that says so."""
    settings = settings_from(cfg)
    raise_if_stopped()
    for warning in settings.warnings:
        log.warning("%s%s", _job(), warning)
    if settings.list_layers:
        from pipeline.layers_table import format_table

        for model in settings.models:
            print(format_table(model, **settings.kwargs_for(model_name(model))))
        return 0, None
    if not _multirun():
        settings.model_cache = 0  # no later job in this process can use a cached model
    plan = make_plan(settings)
    raise_if_stopped()
    root = default_output_dir()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    files = {"config.resolved.yaml": OmegaConf.to_yaml(resolved).encode(), **_hydra_files(cfg)}
    summary = run(settings, plan, root, config=resolved, files=files)
    done = f"in {summary.seconds:.1f}s"
    if summary.skipped:
        done = f"({summary.skipped} already there, {summary.ok} written) {done}"
    if summary.failed:
        reason = (
            f"{len(summary.failed)} of {summary.planned} artefacts failed (each is listed with its reason in "
            f"{root / 'manifest.jsonl'}); {summary.ok + summary.skipped} in place {done}"
        )
        log.error("%s%s", _job(), reason)
        return summary.exit_code, reason
    if summary.skipped:
        log.info("%s%d of %d artefacts in %s %s", _job(), summary.ok + summary.skipped, summary.planned, root, done)
    else:
        log.info("%s%d of %d artefacts written to %s %s", _job(), summary.ok, summary.planned, root, done)
    return summary.exit_code, None
