"""hf-trust: research methods for adapting, distilling, federating and securing foundation models,
reached through the Hugging Face APIs users already know.

``import hf_trust`` registers the PEFT tuner types (ThanoRA, LoRASculpt) so that ``get_peft_model``,
``PeftConfig.from_pretrained`` and ``PeftModel.from_pretrained`` know them. Every public class below is
importable from here and from its own subpackage; they are loaded on first attribute access (PEP 562),
so ``import hf_trust`` costs no more than the PEFT import that registration needs anyway.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# Public name -> the subpackage that exports it. tests/test_layout.py checks that every entry resolves
# to the same object as the subpackage export.
_LAZY: dict[str, str] = {
    # PEFT tuners
    "ThanoRAConfig": "hf_trust.peft_tuners.thanora",
    "ThanoRAModel": "hf_trust.peft_tuners.thanora",
    "ThanoRATrainer": "hf_trust.peft_tuners.thanora",
    "preprocess_thanora": "hf_trust.peft_tuners.thanora",
    "LoRASculptConfig": "hf_trust.peft_tuners.lorasculpt",
    "LoRASculptModel": "hf_trust.peft_tuners.lorasculpt",
    "LoRASculptTrainer": "hf_trust.peft_tuners.lorasculpt",
    "LoRASculptCallback": "hf_trust.peft_tuners.lorasculpt",
    # federated core
    "FederatedConfig": "hf_trust.trainers.federated",
    "FederatedTrainer": "hf_trust.trainers.federated",
    "ClientTrainer": "hf_trust.trainers.federated",
    "SupervisedClientTrainer": "hf_trust.trainers.federated",
    "DirichletLabelPartitioner": "hf_trust.trainers.federated",
    "IIDPartitioner": "hf_trust.trainers.federated",
    "DomainPartitioner": "hf_trust.trainers.federated",
    "FixedClassesPartitioner": "hf_trust.trainers.federated",
    "Strategy": "hf_trust.trainers.federated",
    "FedAvg": "hf_trust.trainers.federated",
    "FedProx": "hf_trust.trainers.federated",
    "FedAdam": "hf_trust.trainers.federated",
    "latest_checkpoint": "hf_trust.trainers.federated",
    # federations on Flower (needs the [flower] extra; a clear MissingExtraError without it)
    "FlowerFederation": "hf_trust.trainers.federated.flower",
    # federated prompt learning
    "PromptConfig": "hf_trust.trainers.fpl",
    "FPLConfig": "hf_trust.trainers.fpl",
    "CLIPPromptModel": "hf_trust.trainers.fpl",
    "FederatedPromptTrainer": "hf_trust.trainers.fpl",
    "load_prompts": "hf_trust.trainers.fpl",
    # GGEUR
    "GGEURConfig": "hf_trust.trainers.ggeur",
    "GGEURTrainer": "hf_trust.trainers.ggeur",
    "embed_dataset": "hf_trust.trainers.ggeur",
    # ACGKD
    "ACGKDConfig": "hf_trust.trainers.acgkd",
    "ACGKDTrainer": "hf_trust.trainers.acgkd",
    "acgkd_distill": "hf_trust.trainers.acgkd",
    "GNNClassifier": "hf_trust.trainers.acgkd",
    # BYE
    "BYEFilter": "hf_trust.filters",
    "BYEReport": "hf_trust.filters",
    "bye_select": "hf_trust.filters",
    "bye_defence": "hf_trust.filters",
    # EPEAgent
    "AgentSpec": "hf_trust.agents",
    "PrivacyPolicy": "hf_trust.agents",
    "PrivacyEnhancingAgent": "hf_trust.agents",
    "EPEOrchestrator": "hf_trust.agents",
    "hf_chat_backend": "hf_trust.agents",
    "LeakageDetector": "hf_trust.agents",
    "PrivacyAgentConfig": "hf_trust.agents",
    "train_privacy_agent": "hf_trust.agents",
    # Hub
    "push_adapter": "hf_trust.hub_cards",
    "render_card": "hf_trust.hub_cards",
    "TrustReport": "hf_trust.hub_cards",
    "TrustCheck": "hf_trust.hub_cards",
    # the one exception family
    "HFTrustError": "hf_trust.errors",
    "HFTrustConfigError": "hf_trust.errors",
    "HFTrustDataError": "hf_trust.errors",
    "HFTrustCacheError": "hf_trust.errors",
    "MissingExtraError": "hf_trust.errors",
}


def metric_path(name: str) -> str:
    """Absolute path of one of this package's ``evaluate`` metric folders, usable from any cwd.

    >>> import evaluate, hf_trust
    >>> ck = evaluate.load(hf_trust.metric_path("cot_kinetics"))  # doctest: +SKIP
    """
    from hf_trust import metrics

    root = os.path.dirname(os.path.abspath(metrics.__file__))
    path = os.path.join(root, name)
    if not os.path.isfile(os.path.join(path, f"{name}.py")):
        available = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, f"{d}.py")))
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(available) or 'none'}.")
    return path


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_trust' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


def _register_tuners() -> None:
    from hf_trust import peft_tuners

    peft_tuners.register_all()


_register_tuners()

__all__ = ["__version__", "metric_path", *_LAZY]
