"""Model-card templates and ``push_adapter`` for publishing hf-trust adapters with a trust report
and their measured evaluation results."""

from .card import LIFECYCLE_RISKS, TrustCheck, TrustReport, render_card
from .evidence import evidence_eval_results, evidence_report
from .push import EVAL_RESULTS_PATH, push_adapter

__all__ = [
    "EVAL_RESULTS_PATH",
    "LIFECYCLE_RISKS",
    "TrustCheck",
    "TrustReport",
    "evidence_eval_results",
    "evidence_report",
    "push_adapter",
    "render_card",
]
