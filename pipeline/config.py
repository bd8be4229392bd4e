"""The user's Hydra config, checked once and turned into plain settings before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.errors import UserError, closest
from pipeline.methods import METHOD_RULES, METHODS, TargetSpec
from pipeline.methods.backprop import STRATEGIES
from pipeline.models.registry import available_models

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Settings:
    """Everything the engine needs, validated: names exist, values have the right type."""

    models: list[str]
    weights: str
    seed: int
    layers: object
    images: list[str]
    methods: list[str]
    params: dict[str, dict]
    save_raw: bool = False
    device: str = "cpu"
    batch_size: int = 4
    model_cache: int = 4
    predictions: bool = True
    png_compression: int = 1
    render_workers: int = 2
    backward_strategy: str = "loop"
    render: dict = field(default_factory=dict)

    def target_spec(self, method: str) -> TargetSpec:
        return target_spec(self.params.get(method, {}))


def target_spec(p: dict) -> TargetSpec:
    """The backprop target described by one method's parameters (``target``, ``top_k``, ``channels``, ...)."""
    channels = p.get("channels")
    return TargetSpec(
        target=str(p.get("target", "channel")),
        top_k=int(p.get("top_k", 8)),
        channels=tuple(int(c) for c in channels) if channels else None,
        objective=str(p.get("objective", "max")),
        class_index=None if p.get("class_index") is None else int(p["class_index"]),
    )


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return list(value)
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


def _choice(key: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise UserError(f"{key}: {value!r} is not one of {', '.join(valid)}.{closest(value, valid)}")
    return value


def resolve_device(name: str) -> str:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without one is a user error."""
    if name not in DEVICES:
        raise UserError(f"device: {name!r} is not one of {', '.join(DEVICES)}.")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for, but torch sees no CUDA device here (use device=auto or cpu).")
    return name


def settings_from(cfg: DictConfig) -> Settings:
    """Check names and values in ``cfg`` and return Settings; raise UserError with the closest valid names."""
    known = available_models()
    models = [str(m) for m in _as_list(cfg.get("models"))]
    if not models:
        raise UserError("models: give at least one model name, e.g. models=[resnet18,alexnet].")
    for name in models:
        if name not in known:
            raise UserError(f"models: {name!r} is not a torchvision classification model.{closest(name, known)}")
    methods = [str(m) for m in _as_list(cfg.get("methods"))]
    if not methods:
        raise UserError(f"methods: give at least one of {', '.join(METHODS)}.")
    for name in methods:
        if name not in METHODS:
            raise UserError(f"methods: {name!r} is not a method. Valid: {', '.join(METHODS)}.{closest(name, METHODS)}")
    params = {m: OmegaConf.to_container(cfg[m], resolve=True) if cfg.get(m) is not None else {} for m in METHODS}
    for method in METHOD_RULES:
        if method in methods:
            try:
                target_spec(params[method])
            except (TypeError, ValueError) as exc:
                raise UserError(f"{method}: {exc}.") from None
    images = [str(i) for i in _as_list(cfg.get("images"))]
    weights = cfg.get("weights")
    batch_size = int(cfg.get("batch_size", 4))
    if batch_size < 1:
        raise UserError(f"batch_size: must be at least 1, got {batch_size}.")
    return Settings(
        models=list(dict.fromkeys(models)),
        weights="none" if weights is None else str(weights),
        seed=int(cfg.get("seed", 0)),
        layers=OmegaConf.to_container(cfg.layers)
        if isinstance(cfg.get("layers"), ListConfig)
        else cfg.get("layers", "all"),
        images=images,
        methods=list(dict.fromkeys(methods)),
        params=params,
        save_raw=bool(cfg.get("save_raw", False)),
        device=resolve_device(str(cfg.get("device", "auto"))),
        batch_size=batch_size,
        model_cache=int(cfg.get("model_cache", 4)),
        predictions=bool(cfg.get("predictions", True)),
        png_compression=int(cfg.get("png_compression", 1)),
        render_workers=max(1, int(cfg.get("render_workers", 2))),
        backward_strategy=_choice("backward_strategy", str(cfg.get("backward_strategy", "loop")), STRATEGIES),
        render=OmegaConf.to_container(cfg.render, resolve=True) if cfg.get("render") is not None else {},
    )


def default_output_dir() -> Path:
    """Hydra's run (or sweep job) directory when running under Hydra, else ./outputs/manual."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path("outputs/manual")
