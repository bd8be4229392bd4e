"""The plan of jobs: models × layers × images × methods, checked in full before any real work starts.

Layers are resolved on a meta-device copy of each architecture, so planning a sweep over huge models costs
no memory and no weights; weights are only checked for availability here, never loaded. ``Plan.artefacts``
is the one enumeration of what a run makes: the planned count and every failure record derive from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.errors import UserError
from pipeline.images import image_labels, image_names, resolve_images
from pipeline.methods.base import Method, ModelInfo, Scope
from pipeline.models.custom import CustomModel
from pipeline.models.layers import ConvLayer, conv_layers, select_layers
from pipeline.models.registry import WeightsChoice, ensure_available, meta_skeleton, resolve_weights


@dataclass(frozen=True)
class ArtefactKey:
    """One artefact: a model's method at a layer (None: per image) for an image (None: per layer)."""

    model: str
    method: str
    layer: str | None
    image: Path | None


@dataclass
class ModelPlan:
    """One model's share of the sweep."""

    name: str
    weights: WeightsChoice
    layers: list[ConvLayer]
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    custom: CustomModel | None = None  # a user's own model (else a torchvision name)

    def info(self) -> ModelInfo:
        """What a method may check before any work (no class names, no preprocessing yet)."""
        return ModelInfo(self.name, (), (), (), self.num_classes, tuple(self.layers))


@dataclass
class Plan:
    """Everything a run will produce, known up front (for the progress bar, the summary and failure records)."""

    models: list[ModelPlan]
    images: list[Path]
    labels: dict[Path, str]  # file-name safe and unique: part of each PNG's name
    methods: list[Method]
    names: dict[Path, str] = field(default_factory=dict)  # as the files are named (unicode kept): for people
    per_layer: bool = True  # makes the per-layer artefacts (False on shards other than 0, see ``shard_of``)
    all_images: list[Path] = field(default_factory=list)  # the run's full image list, before ``shard`` cut it

    def index(self) -> dict[Path, int]:
        """Each image's global index: its place in the run's full image list (the same in every shard)."""
        return {image: i for i, image in enumerate(self.all_images or self.images)}

    shard: tuple[int, int] | None = None  # (i, n): gatherers write partial states, merged later (engine.shards)

    def name(self, image: Path) -> str:
        return self.names.get(image) or self.labels[image]

    def image_methods(self) -> list[Method]:
        """Methods that need images (everything but per-layer ones such as filters)."""
        return [m for m in self.methods if m.scope is not Scope.LAYER]

    def gatherers(self) -> list[Method]:
        """Per-layer methods that gather over the image batches before they make their artefacts."""
        return [m for m in self.methods if m.scope is Scope.LAYER and m.gathers]

    def artefacts(self, model: ModelPlan | None = None, images: Iterable[Path] | None = None) -> Iterator[ArtefactKey]:
        """Every planned artefact, in the order the engine makes them; optionally one model's, or some images'.

        With ``images`` given, per-layer artefacts (which need no image) are left out."""
        for mp in [model] if model is not None else self.models:
            if images is None and self.per_layer:
                for method in self.methods:
                    if method.scope is Scope.LAYER and not (self.shard and method.gathers):
                        yield from (ArtefactKey(mp.name, method.name, layer.name, None) for layer in mp.layers)
            for image in self.images if images is None else images:
                for method in self.image_methods():
                    layers = [layer.name for layer in mp.layers] if method.scope is Scope.LAYER_IMAGE else [None]
                    yield from (ArtefactKey(mp.name, method.name, layer, image) for layer in layers)

    def merged(self, model: ModelPlan | None = None) -> Iterator[ArtefactKey]:
        """The per-layer artefacts of gathering methods that a sharded run leaves to the merge step (which writes
        them into shard 0's folder): none on other shards or without a shard."""
        if self.shard is None or self.shard[0] != 0:
            return
        for mp in [model] if model is not None else self.models:
            for method in self.gatherers():
                yield from (ArtefactKey(mp.name, method.name, layer.name, None) for layer in mp.layers)

    def count(self) -> int:
        return sum(1 for _ in self.artefacts())


def shard_of(images: list, shard: tuple[int, int] | None, batch: int = 1) -> list:
    """The ``i``-th of ``n`` equal parts of ``images`` (contiguous, in their order), cut between whole batches of
    ``batch`` images: a shard then runs exactly the batches the unsharded run would, so its pictures have the
    same bytes (CPU kernels round differently for other batch compositions). Part sizes differ by one batch at
    most; they depend on the config only, never on the machine, so every array task agrees on them."""
    if shard is None:
        return images
    i, n = shard
    batches = -(-len(images) // batch)
    return images[i * batches // n * batch : (i + 1) * batches // n * batch]


def skeleton_layers(model: str, **kwargs: Any) -> list[ConvLayer]:
    """A model's conv layers, read off a meta-device build (no memory, no weights)."""
    return conv_layers(meta_skeleton(model, **kwargs))


def _classes(model: str, choice: WeightsChoice, kwargs: dict[str, Any]) -> int:
    """The number of logits: the weights' own class list, else the builder's ``num_classes`` (ImageNet's 1000)."""
    meta = getattr(choice.enum, "meta", None) if choice.kind == "enum" else None
    if meta and meta.get("categories"):
        return len(meta["categories"])
    return int(kwargs.get("num_classes", 1000))


def make_plan(
    settings: Settings, check_weights: bool = True, images: list | None = None, download: bool = True
) -> Plan:
    """Resolve every name and file in ``settings``; raise UserError on the first bad one.

    ``images`` replaces ``settings.images`` (the Python API hands over pictures and tensors)."""
    images = resolve_images(settings.images) if images is None else images
    models = []
    for name in settings.models:
        if isinstance(name, CustomModel):
            layers = select_layers(name.layers(), settings.layers, name.name)
            models.append(ModelPlan(name.name, name.weights, layers, custom=name))
            continue
        choice = resolve_weights(name, settings.weights, settings.seed)
        kwargs = settings.kwargs_for(name)
        try:
            skeleton = skeleton_layers(name, **kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"model_kwargs: {name} does not accept {kwargs} ({exc}).") from None
        layers = select_layers(skeleton, settings.layers, name)
        models.append(ModelPlan(name, choice, layers, kwargs, _classes(name, choice, kwargs)))
    for model in models:
        for method in settings.methods:
            try:
                method.check(model.info())
            except ValueError as exc:
                raise UserError(f"{method.name}: {exc}.") from None
    if check_weights:
        for model in models:
            if model.custom is None:
                ensure_available(model.name, model.weights, download)
    # labels and names over every image, so a shard names its pictures exactly as the unsharded run does
    return Plan(
        models=models,
        images=shard_of(images, settings.shard, settings.batch_size if isinstance(settings.batch_size, int) else 1),
        labels=image_labels(images),
        methods=settings.methods,
        names=image_names(images),
        per_layer=settings.shard is None or settings.shard[0] == 0,
        all_images=list(images),
        shard=settings.shard,
    )
