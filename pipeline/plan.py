"""The plan of jobs: models × layers × images × methods, checked in full before any real work starts.

Layers are resolved on a meta-device copy of each architecture, so planning a sweep over huge models costs
no memory and no weights; weights are only checked for availability here, never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings
from pipeline.images import image_labels, resolve_images
from pipeline.methods import METHOD_RULES
from pipeline.models.layers import ConvLayer, conv_layers, select_layers
from pipeline.models.registry import WeightsChoice, ensure_available, meta_skeleton, resolve_weights


@dataclass
class ModelPlan:
    """One model's share of the sweep."""

    name: str
    weights: WeightsChoice
    layers: list[ConvLayer]


@dataclass
class Plan:
    """Everything a run will produce, known up front (for the progress bar and the summary)."""

    models: list[ModelPlan]
    images: list[Path]
    labels: dict[Path, str]
    methods: list[str]

    def per_image_methods(self) -> list[str]:
        return [m for m in self.methods if m != "filters"]

    def artefact_count(self, settings: Settings) -> int:
        total = 0
        for model in self.models:
            per_layer = 0
            for method in self.methods:
                if method == "filters":
                    total += len(model.layers)
                elif method in METHOD_RULES and settings.target_spec(method).target == "class":
                    total += len(self.images)
                else:
                    per_layer += 1
            total += per_layer * len(model.layers) * len(self.images)
        return total


def skeleton_layers(model: str) -> list[ConvLayer]:
    """A model's conv layers, read off a meta-device build (no memory, no weights)."""
    return conv_layers(meta_skeleton(model))


def make_plan(settings: Settings, check_weights: bool = True) -> Plan:
    """Resolve every name and file in ``settings``; raise UserError on the first bad one."""
    images = resolve_images(settings.images)
    models = []
    for name in settings.models:
        choice = resolve_weights(name, settings.weights, settings.seed)
        layers = select_layers(skeleton_layers(name), settings.layers, name)
        models.append(ModelPlan(name, choice, layers))
    if check_weights:
        for model in models:
            ensure_available(model.name, model.weights)
    return Plan(models=models, images=images, labels=image_labels(images), methods=settings.methods)
