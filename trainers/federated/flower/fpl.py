"""Kept as an import path: federated prompt learning on Flower lives beside the method, in
``hf_trust.trainers.fpl.flower``."""

from ...fpl.flower import FlowerPromptFederation, PromptClientRuntime

__all__ = ["FlowerPromptFederation", "PromptClientRuntime"]
