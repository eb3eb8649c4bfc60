"""Model-card templates and ``push_adapter`` for publishing hf-trust adapters with a trust report."""

from .card import LIFECYCLE_RISKS, TrustCheck, TrustReport, render_card
from .push import push_adapter

__all__ = ["LIFECYCLE_RISKS", "TrustCheck", "TrustReport", "push_adapter", "render_card"]
