"""``python run.py --help``: the product's own help, rendered into Hydra's ``hydra.help.template``.

The text is made when asked for, from where each thing is defined: the main keys' one-line meanings from
``pipeline.config.KEY_HELP`` (beside their checks) with their current values from the composed config (defaults
from ``conf/config.yaml`` plus the command line's overrides), and every registered method, plugins included,
with each parameter's default, range or choices and metadata ``help`` from its ``Params`` dataclass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.methods import registry
from pipeline.methods.params import _hints, _optional

WIDTH = 22  # column of the explanations
PARAM_WIDTH = 34  # the same for method parameters

ABOUT = """\
Filter-Map-Insights: see inside an ImageNet CNN (any of torchvision's classification models, efficientnet_lite0
with offline weights, or your own). For every model x layer x image x method it writes PNG grids, a manifest and a
browsable report: the filters of each conv layer, the feature maps an image produces there, guided
backpropagation (and gradient, deconvnet), the CAM family, and an overview from input to output.

Usage
  python run.py [key=value ...]        one run into outputs/<date>/<time>/ (open its index.html)
  python run.py -m key=a,b ...         a sweep: one job per combination, one report over all of them
  python run.py --cfg job              print the whole composed config instead of running
  python run.py --hydra-help           Hydra's own options (launchers, sweepers, logging)
"""

EXAMPLES = """\
Examples
  python run.py                                          the default job: efficientnet_lite0, sample photos
  python run.py models=[resnet18,vgg16] weights=none layers=[first,last]
  python run.py models=resnet18 list_layers=true         print the conv layers with their output shapes
  python run.py methods=[feature_maps,grad_cam] feature_maps.top_k=16 images=[photos/]
  python run.py -m models=alexnet,resnet18 hydra/launcher=local_parallel
  python -m pipeline.report outputs/2026-12-03/10-00-00-000000   rebuild a folder's report
"""


def _value(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _line(name: str, text: str, indent: int = 2, width: int = WIDTH) -> str:
    pad = " " * indent
    if len(name) < width - indent - 1:
        return f"{pad}{name:<{width - indent}}{text}".rstrip()
    return f"{pad}{name}\n{' ' * width}{text}".rstrip()


def _range(meta: Mapping[str, Any]) -> str:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"{low} or more" if low is not None else f"at most {high}" if high is not None else ""


def _param(cls: type, f: dataclasses.Field, current: Any) -> str:
    """One parameter: its current value (the dataclass default unless overridden), then its help, choices or
    range."""
    kind, _ = _optional(_hints(cls)[f.name])
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    default = default if current is None or f.name not in current else current[f.name]
    bits = []
    if typing.get_origin(kind) is typing.Literal:
        bits.append("one of " + ", ".join(map(str, typing.get_args(kind))))
    elif typing.get_origin(kind) in (list, tuple):
        bits.append("a list, e.g. [3,17]")
    elif _range(f.metadata):
        bits.append(_range(f.metadata))
    if "above" in f.metadata:
        bits.append(f"more than {f.metadata['above']}")
    if f.metadata.get("check") == "colormap":
        bits.append("a matplotlib colormap")
    if f.metadata.get("help"):
        bits.insert(0, str(f.metadata["help"]))
    return _line(f"{f.name}={_value(default)}", "; ".join(bits), indent=6, width=PARAM_WIDTH)


def methods_help(root: DictConfig, chosen: list[str]) -> list[str]:
    """Every registered method in the registry's order, whether the config runs it, its parameters' values."""
    lines = ["Methods: methods=[...] picks them; each parameter is set as <method>.<parameter>=value"]
    for name in registry.names():
        cls = registry.method_class(name)
        doc = (cls.description or next(iter((cls.__doc__ or "").strip().splitlines()), "")).rstrip(
            "."
        ) or "(no description)"
        lines.append(_line(name, f"{doc}{'  [on]' if name in chosen else ''}"))
        current = root.get(name)
        lines += [_param(cls.Params, f, current) for f in dataclasses.fields(cls.Params)]
    return lines


def help_text(root: DictConfig, keys: Mapping[str, str]) -> str:
    """The whole help for the composed config ``root``; ``keys`` maps each main key to its one-line meaning.
    ``$`` is doubled: Hydra passes the text through ``string.Template``."""
    plugins = root.get("plugins") or []
    with contextlib.suppress(Exception):  # a broken plugin must not hide the help; a run says what is wrong
        registry.load_plugins([str(p) for p in plugins])
    chosen = [str(m) for m in (root.get("methods") or [])]
    lines = [ABOUT, "Main keys (current value, then what it means; key=value on the command line)"]
    for key, meaning in keys.items():
        current = OmegaConf.select(root, key, default=None, throw_on_resolution_failure=False)
        lines.append(_line(key, f"= {_value(current)}"))
        lines.append(" " * WIDTH + meaning)
    lines += ["", *methods_help(root, chosen), "", EXAMPLES]
    return "\n".join(lines).replace("$", "$$")
