"""The visualisation methods: small modules of pure tensor code (no file I/O, no Hydra)."""

from pipeline.methods.backprop import ACTIVATION_POLICY, METHOD_RULES, Session, TargetSpec, backprop
from pipeline.methods.feature_maps import FeatureMaps, feature_maps
from pipeline.methods.filters import Filters, filters

METHODS = ("filters", "feature_maps", *METHOD_RULES)
__all__ = [
    "ACTIVATION_POLICY",
    "METHODS",
    "METHOD_RULES",
    "FeatureMaps",
    "Filters",
    "Session",
    "TargetSpec",
    "backprop",
    "feature_maps",
    "filters",
]
