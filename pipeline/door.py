"""Checks of the command line that must come before Hydra runs: Hydra would answer them with a traceback or its
own five-line message and exit 1, where every other bad setting gets one line and exit 2.

- a key that is neither a setting nor an installed method (``feature_viz.steps=8`` before that method exists,
  ``grad_cma.top_k=2``), or a parameter a method does not have: one line naming the closest;
- a run or sweep folder that cannot be made (a file in the way, no permission, ``/proc``).
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from omegaconf import OmegaConf

from pipeline.errors import UserError, closest
from pipeline.methods import registry

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {"hydra", "render", "experiment"}  # config groups and Hydra's own keys: left to Hydra


def _overrides(args: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException:
        return []  # Hydra says what is wrong with the syntax itself


def check_keys(args: list[str]) -> None:
    """UserError in one line for an override whose key no setting or method has (``+key`` adds on purpose)."""
    settings = set(OmegaConf.load(CONF / "config.yaml")) - {"defaults"}
    overrides = _overrides(args)
    for override in overrides:  # a plugin's methods are installed methods too
        if override.key_or_group == "plugins" and not override.is_sweep_override():
            value = override.value()
            registry.load_plugins([str(v) for v in (value if isinstance(value, list) else [value])])
    methods = registry.names()
    for override in overrides:
        if override.is_add() or override.is_force_add() or override.is_delete():
            continue
        key = override.key_or_group
        head, _, rest = key.replace("/", ".").partition(".")
        if head in GROUPS or head in settings:
            continue
        if head in methods:
            params = [f.name for f in fields(registry.method_class(head).Params)]
            param = rest.partition(".")[0]
            if rest and param not in params:
                raise UserError(
                    f"{key}: {head} has no parameter {param!r}. Valid: {', '.join(params)}.{closest(param, params)}"
                )
            continue
        raise UserError(
            f"{key}: {head!r} is neither a setting nor an installed method (methods: {', '.join(methods)})."
            f"{closest(head, [*methods, *settings])} A plugin's method takes +{key}=..."
        )


INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version", "--shell-completion", "-sc"}


def informational(args: list[str]) -> bool:
    """Whether Hydra is only asked to print something (help, config, info): no folder is made."""
    return any(arg.split("=")[0] in INFO_FLAGS for arg in args)


def check_folder(args: list[str]) -> None:
    """UserError in one line when the run folder (or the sweep folder, with -m) cannot be made or written."""
    key = "hydra.sweep.dir" if any(a in ("-m", "--multirun") for a in args) else "hydra.run.dir"
    given = [o.value() for o in _overrides(args) if o.key_or_group == key and not o.is_sweep_override()]
    folder = Path(str(given[-1])).expanduser() if given else Path("outputs")
    if "${" in str(folder):
        folder = Path(str(folder).split("${")[0] or ".")
    probe = folder.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{key}: cannot make the folder {str(folder)!r}: {str(probe)!r} is a file.")
    if not os.access(probe, os.W_OK | os.X_OK) or str(probe).startswith(("/proc", "/sys")):
        where = "" if probe == folder.absolute() else f" in {str(probe)!r}"
        raise UserError(f"{key}: cannot write into {str(folder)!r}: no permission{where}.")
