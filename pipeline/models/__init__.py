"""Models and their layers: loading with honest weights, and naming conv layers by dotted path."""

from pipeline.models.layers import ConvLayer, conv_layers, select_layers
from pipeline.models.registry import LoadedModel, available_models, load_model, resolve_weights

__all__ = [
    "ConvLayer",
    "LoadedModel",
    "available_models",
    "conv_layers",
    "load_model",
    "resolve_weights",
    "select_layers",
]
