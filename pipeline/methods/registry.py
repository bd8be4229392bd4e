"""Every method by name. Built-in methods register themselves when ``pipeline.methods`` is imported; a user's
method module registers itself on import too (``plugins=[mypkg.my_method]`` in the config)."""

from __future__ import annotations

import importlib
import pkgutil

from pipeline.errors import UserError, closest
from pipeline.methods.base import Method

_METHODS: dict[str, type[Method]] = {}
# Top-level config keys a method name must not shadow.
RESERVED = {
    "models",
    "weights",
    "seed",
    "layers",
    "images",
    "methods",
    "hydra",
    "plugins",
    "model_kwargs",
    "experiment",
    "render",
    "save_raw",
    "device",
    "batch_size",
    "memory_budget",
    "max_image_pixels",
    "predictions",
    "model_cache",
    "list_layers",
    "backward_strategy",
    "render_workers",
    "png_compression",
    "report",
}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``. A name another class already has (a built-in
    method's, or another plugin's) is refused in one line naming both: a plugin never silently replaces a method.
    The same class registered again (its module reloaded) replaces itself."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"method class {cls.__qualname__} needs a ``name`` that is a Python identifier")
    if name in RESERVED:
        raise TypeError(f"method name {name!r} would shadow the config key of the same name")
    taken = _METHODS.get(name)
    if taken is not None and _where(taken) != _where(cls):
        built_in = "the built-in method" if taken.__module__.startswith(f"{__package__}.") else "the method"
        raise UserError(
            f"plugins: {_where(cls)} registers the method name {name!r}, which {built_in} {_where(taken)} already "
            "has; give your method another name."
        )
    _METHODS[name] = cls
    return cls


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def discover() -> None:
    """Import every module of this package once, so the built-in methods are registered."""
    import pipeline.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in {"base", "params", "registry"}:
            importlib.import_module(f"{package.__name__}.{info.name}")


def load_plugins(modules: list[str]) -> None:
    """Import a user's method modules (each registers its methods); UserError naming a module that fails."""
    discover()  # the built-in names first, so that a plugin reusing one is the one refused
    for module in modules:
        try:
            importlib.import_module(module)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any import problem is the user's to fix, in one line
            raise UserError(f"plugins: cannot import {module!r} ({type(exc).__name__}: {exc}).") from None


def names() -> list[str]:
    """Registered method names, built-ins first in the order they read best."""
    discover()
    return sorted(_METHODS, key=lambda name: _METHODS[name].order)


def method_class(name: str) -> type[Method]:
    """The class registered under ``name``, or UserError with the closest names."""
    discover()
    if name not in _METHODS:
        raise UserError(f"methods: {name!r} is not a method. Valid: {', '.join(_METHODS)}.{closest(name, _METHODS)}")
    return _METHODS[name]
