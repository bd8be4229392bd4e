"""The plain function behind ``run.py``: config in, pictures and manifest out, a clear exit status."""

from __future__ import annotations

import logging
import sys

from omegaconf import DictConfig, OmegaConf

from pipeline.config import default_output_dir, model_name, settings_from
from pipeline.engine import run
from pipeline.errors import UserError
from pipeline.output.files import write_bytes
from pipeline.plan import make_plan

log = logging.getLogger("pipeline")


class RunFailed(Exception):
    """Some artefacts failed; they are listed in manifest.jsonl and run.json."""


def _multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


_STATUS = {"exit_code": 0}


def main(cfg: DictConfig) -> int:
    """Run one job; return (and remember for ``exit_code``) 2 on bad input, 1 when artefacts failed.

    The error is printed as one line instead of raised, so Hydra still runs its end-of-job callbacks;
    inside a multirun it is raised, so Hydra records the failed job and runs the others.
    """
    try:
        code = _main(cfg)
    except (UserError, RunFailed) as exc:
        if _multirun():
            raise
        code = 2 if isinstance(exc, UserError) else 1
        print(f"error: {exc}", file=sys.stderr)
        log.error("%s", exc)
    _STATUS["exit_code"] = code
    return code


def exit_code() -> int:
    """The status of the last job run in this process, for ``run.py`` to exit with after Hydra is done."""
    return _STATUS["exit_code"]


def _main(cfg: DictConfig) -> int:
    settings = settings_from(cfg)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if settings.list_layers:
        from pipeline.layers_table import format_table

        for model in settings.models:
            print(format_table(model, **settings.kwargs_for(model_name(model))))
        return 0
    if not _multirun():
        settings.model_cache = 0  # no later job in this process can use a cached model
    plan = make_plan(settings)
    root = default_output_dir()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    write_bytes(root / "config.resolved.yaml", OmegaConf.to_yaml(resolved).encode())
    summary = run(settings, plan, root, config=resolved)
    message = f"{summary.ok} of {summary.planned} artefacts written to {root} in {summary.seconds:.1f}s"
    if summary.failed:
        first = summary.failed[0]
        raise RunFailed(
            f"{len(summary.failed)} of {summary.planned} artefacts failed (see {root / 'manifest.jsonl'}); "
            f"first: {first.model} {first.method} {first.layer} {first.image}: {first.error}. {message}."
        )
    log.info("%s", message)
    print(message)
    return 0
