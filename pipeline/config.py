"""The user's Hydra config, checked once at the door and turned into typed Settings before any work starts.

Global defaults live in ``conf/config.yaml``; each method's defaults live in its Params dataclass and reach
Hydra through ``register_configs`` (a ConfigStore node merged under each method's key). Every value is
checked here; a bad one raises UserError with one line naming the key, the value and the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.errors import UserError, closest
from pipeline.methods import registry
from pipeline.methods.base import Method
from pipeline.methods.params import check_value, parse_params
from pipeline.models.registry import available_models

METHOD_DEFAULTS = "method_defaults"
# Scalar settings: (type, constraints). Their defaults are in conf/config.yaml.
SCALARS: dict[str, tuple[Any, dict]] = {
    "seed": (int, {}),
    "save_raw": (bool, {}),
    "device": (Literal["auto", "cpu", "cuda"], {}),
    "batch_size": (int, {"min": 1}),
    "predictions": (bool, {}),
    "model_cache": (int, {"min": 0}),
    "list_layers": (bool, {}),
    "backward_strategy": (Literal["loop", "vmap"], {}),
    "render_workers": (int, {"min": 1, "max": 64}),
    "png_compression": (int, {"min": 0, "max": 9}),
    "report": (bool, {}),
    "max_image_pixels": (int, {"min": 1}),
}


@dataclass
class Settings:
    """Everything the engine needs, checked: names exist, values have the right type and range."""

    models: list[str]
    weights: str
    seed: int
    layers: Any
    images: list[str]
    methods: list[Method]
    model_kwargs: dict[str, dict[str, Any]]
    save_raw: bool
    device: str
    batch_size: int
    model_cache: int
    predictions: bool
    png_compression: int
    render_workers: int
    backward_strategy: str
    font_px: int
    max_image_pixels: int
    list_layers: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    def kwargs_for(self, model: str) -> dict[str, Any]:
        return self.model_kwargs.get(model, {})


def register_configs() -> None:
    """Put every registered method's parameter defaults into Hydra's ConfigStore (``method_defaults``)."""
    from hydra.core.config_store import ConfigStore

    nodes = {name: dataclasses.asdict(registry.method_class(name).Params()) for name in registry.names()}
    ConfigStore.instance().store(name=METHOD_DEFAULTS, node=_plain(nodes))


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


def settings_from(cfg: DictConfig) -> Settings:
    """Check every name and value in ``cfg`` and return Settings; raise UserError on the first bad one."""
    registry.load_plugins([str(p) for p in _as_list(cfg.get("plugins"))])
    known = available_models()
    models = [str(m) for m in _as_list(cfg.get("models"))]
    if not models:
        raise UserError("models: give at least one model name, e.g. models=[resnet18,alexnet].")
    for name in models:
        if name not in known:
            raise UserError(f"models: {name!r} is not a torchvision classification model.{closest(name, known)}")
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
    models = list(dict.fromkeys(models))
    return Settings(
        models=models,
        weights="none" if weights is None else str(weights),
        seed=scalars["seed"],
        layers=layers,
        images=[str(i) for i in _as_list(cfg.get("images"))],
        methods=methods,
        model_kwargs=_model_kwargs(cfg.get("model_kwargs"), models),
        save_raw=scalars["save_raw"],
        device=resolve_device(scalars["device"]),
        batch_size=scalars["batch_size"],
        model_cache=scalars["model_cache"],
        predictions=scalars["predictions"],
        png_compression=scalars["png_compression"],
        render_workers=scalars["render_workers"],
        backward_strategy=scalars["backward_strategy"],
        font_px=font_px,
        max_image_pixels=scalars["max_image_pixels"],
        list_layers=scalars["list_layers"],
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
