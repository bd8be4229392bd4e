"""The user's Hydra config, checked once at the door and turned into typed Settings before any work starts.

Global defaults live in ``conf/config.yaml``; each method's defaults live in its Params dataclass and reach
Hydra through ``register_configs`` (a ConfigStore node merged under each method's key). Every value is
checked here; a bad one raises UserError with one line naming the key, the value and the valid ones.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.errors import UserError, closest
from pipeline.help import help_text
from pipeline.methods import registry
from pipeline.methods.base import Method
from pipeline.methods.params import check_value, parse_params
from pipeline.models.custom import CustomModel, from_config
from pipeline.models.registry import available_models

METHOD_DEFAULTS = "method_defaults"
# Scalar settings: (type, constraints). Their defaults are in conf/config.yaml.
SCALARS: dict[str, tuple[Any, dict]] = {
    "seed": (int, {"min": 0, "max": 2**32 - 1}),  # as numpy takes it; a larger one overflowed in torch
    "save_raw": (bool, {}),
    "device": (Literal["auto", "cpu", "cuda"], {}),
    "predictions": (bool, {}),
    "list_layers": (bool, {}),
    "backward_strategy": (Literal["loop", "vmap"], {}),
    "render_workers": (int, {"min": 1, "max": 64}),
    "png_compression": (int, {"min": 0, "max": 9}),
    "report": (bool, {}),
    "max_image_pixels": (int, {"min": 1}),
}

# One line per main key for ``python run.py --help`` (pipeline.help), kept beside the checks below; the
# defaults are in conf/config.yaml.
KEY_HELP: dict[str, str] = {
    "models": "torchvision model names or glob patterns (resnet*), all, or {_target_: ...} for your own",
    "weights": "DEFAULT, a weights enum name, a checkpoint path (weights_only), or none: random init from seed",
    "seed": "random init and SmoothGrad noise",
    "layers": "all, first, last, dotted names, glob patterns (layer4.*), indices into the conv list (0, -1)",
    "images": "files, folders, globs, and samples (photos shipped inside installed packages)",
    "methods": "which visualisations to make (listed below with their parameters)",
    "plugins": "Python modules that register methods of their own",
    "model_kwargs": "constructor arguments, for all models or per model ({googlenet:{transform_input:false}})",
    "save_raw": "write the exact float32 array behind every PNG as a .npy beside it",
    "device": "auto (CUDA when present), cpu or cuda",
    "batch_size": "images per forward pass, or auto: as many as memory_budget allows",
    "memory_budget": "a size (8GB) or a fraction of the RAM (of the GPU's memory with cuda)",
    "max_image_pixels": "an image with more pixels fails (only its artefacts) before it is decoded",
    "predictions": "top-5 ImageNet classes per image in run.json and the report",
    "model_cache": "memory of loaded models kept for later jobs of a sweep in the same process",
    "list_layers": "print each model's conv layers with their output shapes, then stop",
    "backward_strategy": "loop (one backward per target rank) or vmap (is_grads_batched)",
    "render_workers": "threads that draw and encode PNGs while the model computes (1..64)",
    "png_compression": "zlib level of the PNGs (0..9)",
    "report": "write the browsable report (index.html, report/, compare.html) after every job",
    "render.font_px": "label size in the pictures (6..64)",
}


@dataclass
class Settings:
    """Everything the engine needs, checked: names exist, values have the right type and range."""

    models: list[str | CustomModel]  # torchvision names, or a user's models
    weights: str
    seed: int
    layers: Any
    images: list[str]
    methods: list[Method]
    model_kwargs: dict[str, dict[str, Any]]
    save_raw: bool
    device: str
    batch_size: int | str  # images per pass, or "auto": sized to memory_budget per model
    memory_budget: int | float  # bytes, or a fraction of the device's memory
    model_cache: int  # bytes of loaded models kept for later jobs of this process (0: none)
    predictions: bool
    png_compression: int
    render_workers: int
    backward_strategy: str
    font_px: int
    max_image_pixels: int
    list_layers: bool = False
    shard: tuple[int, int] | None = None  # (i, n): this job makes the i-th of n equal parts of the images
    warnings: list[str] = field(default_factory=list)

    @property
    def method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    def kwargs_for(self, model: str) -> dict[str, Any]:
        return self.model_kwargs.get(model, {})

    @property
    def model_names(self) -> list[str]:
        return [model_name(m) for m in self.models]


def model_name(model: str | CustomModel) -> str:
    return model.name if isinstance(model, CustomModel) else model


def register_configs() -> None:
    """Put every registered method's parameter defaults into Hydra's ConfigStore (``method_defaults``)."""
    from hydra.core.config_store import ConfigStore

    nodes = {name: dataclasses.asdict(registry.method_class(name).Params()) for name in registry.names()}
    ConfigStore.instance().store(name=METHOD_DEFAULTS, node=_plain(nodes))
    if not OmegaConf.has_resolver("fmi_help"):  # conf/config.yaml: hydra.help.template is ${fmi_help:}
        OmegaConf.register_new_resolver("fmi_help", lambda *, _root_: help_text(_root_, KEY_HELP))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


def _container(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


_UNITS = {"": 1, "b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def check_size(key: str, value: Any, fraction: bool = False) -> int | float:
    """Bytes from ``2GB``, ``512MB`` or a plain number of bytes (KB, MB, GB count 1024s); with ``fraction``, a plain
    number must be in (0, 1] and is kept as a fraction of the memory there is. UserError naming ``key`` otherwise."""
    if isinstance(value, bool):
        raise UserError(f"{key}: {value!r} is not a size such as 2GB.")
    if isinstance(value, (int, float)):
        if fraction and 0 < value <= 1:
            return float(value)
        if not fraction and value >= 0 and float(value).is_integer():
            return int(value)
        raise UserError(
            f"{key}: {value!r} is not a size such as 2GB" + (" or a fraction such as 0.6." if fraction else ".")
        )
    found = _SIZE.fullmatch(str(value))
    unit = found.group(2).lower() if found else None
    if found is None or unit not in _UNITS:
        raise UserError(f"{key}: {value!r} is not a size such as 2GB, 512MB (units: KB, MB, GB, TB).")
    return int(float(found.group(1)) * _UNITS[unit])


def _batch_size(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"batch_size: {value!r} is not auto or a whole number of images (1 or more).")
    return value


def resolve_device(name: str) -> str:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for, but torch sees no CUDA device here (use device=auto or cpu).")
    return name


def _model_kwargs(raw: Any, models: list[str]) -> dict[str, dict[str, Any]]:
    """``model_kwargs`` for every model: one mapping for all, or a mapping per model name."""
    raw = _container(raw)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise UserError(f"model_kwargs: {raw!r} is not a mapping, e.g. model_kwargs={{transform_input:false}}.")
    per_model = bool(raw) and all(k in models and isinstance(v, Mapping) for k, v in raw.items())
    if per_model:
        return {str(k): dict(v) for k, v in raw.items()}
    return {m: dict(raw) for m in models} if raw else {}


_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def _merges(method: Any) -> bool:
    merges = getattr(method, "merges", None)
    return bool(merges()) if callable(merges) else False


def check_shard(value: Any, methods: list[Method]) -> tuple[int, int] | None:
    """``shard: i/n`` as (i, n) with 0 <= i < n, or None; a method that gathers over every image into one
    per-layer artefact runs with a shard only if it can merge the shards' states (``Method.merge_states``)."""
    if value is None:
        return None
    found = _SHARD.fullmatch(str(value)) if not isinstance(value, bool) else None
    if found is None or not int(found.group(1)) < int(found.group(2)):
        raise UserError(f"shard: {value!r} is not i/n with 0 <= i < n (e.g. shard=0/8, or null for all images).")
    gathering = [m.name for m in methods if getattr(m, "gathers", False) and not _merges(m)]
    if gathering:
        raise UserError(
            f"shard: {value!r} cannot split {', '.join(gathering)}, which needs every image of the run in one job "
            "and cannot merge shards; run it without shard."
        )
    return int(found.group(1)), int(found.group(2))


def _method_settings(cfg: DictConfig, names: list[str]) -> tuple[list[Method], list[str]]:
    """The chosen methods with their checked parameters. Every registered method's parameters are checked,
    chosen or not, so a typo in a preset is caught the first time it is composed."""
    classes = [registry.method_class(name) for name in names]  # unknown names first: the likelier mistake
    parsed = {
        name: parse_params(registry.method_class(name).Params, _container(cfg.get(name)), name)
        for name in registry.names()
    }
    methods, warnings = [], []
    for cls in classes:
        params = parsed[cls.name]
        warnings += [f"{cls.name}.{key} has no effect with {why}" for key, why in params.unused().items()]
        methods.append(cls(params))
    return methods, warnings


def _models(raw: Any) -> list[str | CustomModel]:
    """Torchvision names, ``all`` (every one), glob patterns (``resnet*``), and mappings with ``_target_`` (a
    user's model built by hydra.utils.instantiate)."""
    known = available_models()
    models: list[str | CustomModel] = []
    for i, entry in enumerate(_as_list(raw)):
        if isinstance(entry, (DictConfig, Mapping)):
            models.append(from_config(_container(entry), f"models[{i}]"))
            continue
        name = str(entry)
        if name == "all":
            models.extend(known)
        elif any(ch in name for ch in "*?["):
            matched = [m for m in known if fnmatch.fnmatchcase(m, name)]
            if not matched:
                raise UserError(f"models: pattern {name!r} matches no model.{closest(name, known)}")
            models.extend(matched)
        elif name in known:
            models.append(name)
        else:
            raise UserError(f"models: {name!r} is not a torchvision classification model.{closest(name, known)}")
    if not models:
        raise UserError("models: give at least one model name, e.g. models=[resnet18,alexnet].")
    unique = {model_name(m): m for m in reversed(models)}
    return [unique[n] for n in dict.fromkeys(model_name(m) for m in models)]


def settings_from(cfg: DictConfig, models: list[CustomModel] | None = None) -> Settings:
    """Check every name and value in ``cfg`` and return Settings; raise UserError on the first bad one.

    ``models`` replaces ``cfg.models`` (the Python API hands over modules, which no config can hold)."""
    registry.load_plugins([str(p) for p in _as_list(cfg.get("plugins"))])
    models = list(models) if models else _models(cfg.get("models"))
    method_names = [str(m) for m in _as_list(cfg.get("methods"))]
    if not method_names:
        raise UserError(f"methods: give at least one of {', '.join(registry.names())}.")
    methods, warnings = _method_settings(cfg, list(dict.fromkeys(method_names)))
    layers = _container(cfg.get("layers"))
    if layers is None or layers == [] or layers == "":
        raise UserError("layers: the list is empty; give all, first, last, dotted names, glob patterns or indices.")
    scalars = {key: check_value(key, _container(cfg.get(key)), kind, meta) for key, (kind, meta) in SCALARS.items()}
    render = _container(cfg.get("render")) or {}
    font_px = check_value("render.font_px", render.get("font_px"), int, {"min": 6, "max": 64})
    weights = cfg.get("weights")
    return Settings(
        models=models,
        weights="none" if weights is None else str(weights),
        seed=scalars["seed"],
        layers=layers,
        images=[str(i) for i in _as_list(cfg.get("images"))],
        methods=methods,
        model_kwargs=_model_kwargs(cfg.get("model_kwargs"), [m for m in models if isinstance(m, str)]),
        save_raw=scalars["save_raw"],
        device=resolve_device(scalars["device"]),
        batch_size=_batch_size(_container(cfg.get("batch_size"))),
        memory_budget=check_size("memory_budget", _container(cfg.get("memory_budget")), fraction=True),
        model_cache=int(check_size("model_cache", _container(cfg.get("model_cache")))),
        predictions=scalars["predictions"],
        png_compression=scalars["png_compression"],
        render_workers=scalars["render_workers"],
        backward_strategy=scalars["backward_strategy"],
        font_px=font_px,
        max_image_pixels=scalars["max_image_pixels"],
        list_layers=scalars["list_layers"],
        shard=check_shard(_container(cfg.get("shard")), methods),
        warnings=warnings,
    )


def default_output_dir() -> Path:
    """Hydra's run (or sweep job) directory when running under Hydra, else ./outputs/manual."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path("outputs/manual")


# With list_layers=true nothing may be written: no run folder, no .hydra/, no run.log, no report.
LISTING_OVERRIDES = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=console", "report=false"]


def listing_overrides(args: list[str]) -> list[str]:
    """The Hydra overrides that keep ``list_layers=true`` (given on this command line) from writing any folder.

    Hydra makes the run folder before the job starts, so this is decided from the command line, before Hydra runs;
    a multirun or an unparsable line is left to Hydra as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(arg in ("-m", "--multirun") for arg in args):
        return []
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except HydraException:
        return []
    listing = [o.value() for o in overrides if o.key_or_group == "list_layers" and not o.is_sweep_override()]
    return LISTING_OVERRIDES if listing and listing[-1] is True else []
