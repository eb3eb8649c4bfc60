"""Model-card templates, ``write_adapter_card`` (the card of a saved adapter) and ``push_adapter`` for
publishing hf-trust adapters with a trust report and their measured evaluation results."""

from .card import LIFECYCLE_RISKS, TrustCheck, TrustReport, read_hf_trust_card, render_card
from .evidence import evidence_eval_results, evidence_report
from .push import EVAL_RESULTS_PATH, push_adapter, resolve_base_model, write_adapter_card

__all__ = [
    "EVAL_RESULTS_PATH",
    "LIFECYCLE_RISKS",
    "TrustCheck",
    "TrustReport",
    "evidence_eval_results",
    "evidence_report",
    "push_adapter",
    "read_hf_trust_card",
    "render_card",
    "resolve_base_model",
    "write_adapter_card",
]
