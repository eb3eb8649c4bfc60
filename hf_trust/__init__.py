"""hf-trust: research methods for adapting, distilling, federating and securing foundation models,
reached through the Hugging Face APIs users already know.

``import hf_trust`` registers the PEFT tuner types (ThanoRA, LoRASculpt) so that
``get_peft_model``, ``PeftConfig.from_pretrained`` and ``PeftModel.from_pretrained`` know them.
Everything else is imported lazily on first attribute access, so ``import hf_trust`` stays cheap.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.  Imported on first access (PEP 562).
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
    # trainers
    "ACGKDConfig": "hf_trust.trainers.acgkd",
    "ACGKDTrainer": "hf_trust.trainers.acgkd",
    "acgkd_distill": "hf_trust.trainers.acgkd",
    "PromptConfig": "hf_trust.trainers.fpl",
    "FederatedPromptTrainer": "hf_trust.trainers.fpl",
    "FPLConfig": "hf_trust.trainers.fpl",
    "load_prompts": "hf_trust.trainers.fpl",
    # trust pieces
    "BYEFilter": "hf_trust.filters",
    "AgentSpec": "hf_trust.agents",
    "PrivacyPolicy": "hf_trust.agents",
    "PrivacyEnhancingAgent": "hf_trust.agents",
    "EPEOrchestrator": "hf_trust.agents",
    "hf_chat_backend": "hf_trust.agents",
    # hub
    "push_adapter": "hf_trust.hub_cards",
    "render_card": "hf_trust.hub_cards",
}


def metric_path(name: str) -> str:
    """Absolute path of one of this package's ``evaluate`` metric folders, usable from any cwd.

    >>> import evaluate, hf_trust
    >>> ck = evaluate.load(hf_trust.metric_path("cot_kinetics"))  # doctest: +SKIP
    """
    from hf_trust import metrics

    path = os.path.join(os.path.dirname(os.path.abspath(metrics.__file__)), name)
    if not os.path.isfile(os.path.join(path, f"{name}.py")):
        available = sorted(
            d
            for d in os.listdir(os.path.dirname(path))
            if os.path.isfile(os.path.join(os.path.dirname(path), d, f"{d}.py"))
        )
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
