"""The visualisation methods: one small module of pure tensor code each (no file I/O, no Hydra).

``base`` defines the interface, ``registry`` finds methods by name, ``params`` checks their parameters.
The built-in methods register themselves when imported here (each class's ``order`` sets where it is
listed); any other module dropped into this package is found too (``registry.discover``).
"""

from pipeline.methods import (  # noqa: F401 - registers the built-in methods
    backprop,
    faithfulness,
    feature_maps,
    feature_viz,
    filters,
    grad_cam,
    grad_cam_pp,
    guided_grad_cam,
    layer_cam,
    overview,
    sanity,
)
from pipeline.methods._rules import ACTIVATION_POLICY
from pipeline.methods.backprop import TargetSpec
from pipeline.methods.base import Method, Needs, Output, Picture, Scope
from pipeline.methods.feature_maps import FeatureMaps
from pipeline.methods.filters import Filters
from pipeline.methods.registry import method_class, names, register

__all__ = [
    "ACTIVATION_POLICY",
    "FeatureMaps",
    "Filters",
    "Method",
    "Needs",
    "Output",
    "Picture",
    "Scope",
    "TargetSpec",
    "method_class",
    "names",
    "register",
]
