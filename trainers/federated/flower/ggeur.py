"""Kept as an import path: GGEUR's Flower federation lives beside the method, in ``hf_trust.trainers.ggeur.flower``."""

from ...ggeur.flower import (
    COUNTS_KEY,
    GLOBAL_COUNTS_KEY,
    META_KEY,
    SHAPES_KEY,
    STATS_KEY,
    FlowerGGEUR,
    GGEURClientRuntime,
    statistics_from_records,
    statistics_to_records,
)

__all__ = [
    "COUNTS_KEY",
    "GLOBAL_COUNTS_KEY",
    "META_KEY",
    "SHAPES_KEY",
    "STATS_KEY",
    "FlowerGGEUR",
    "GGEURClientRuntime",
    "statistics_from_records",
    "statistics_to_records",
]
