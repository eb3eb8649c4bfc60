"""CoT-Kinetics as an ``evaluate`` metric (``evaluate.load(hf_trust.metric_path("cot_kinetics"))``), and its parts
for use without ``evaluate``: the settings (:class:`CotKineticsConfig`), the scorer (:func:`score_batch`) and
the energy-term registry (:class:`EnergyTerm`, :func:`register_energy_term`).

``cot_kinetics.py`` is the evaluate module script; ``kinetics.py`` holds the math, ``forward.py`` the model
plumbing, ``config.py`` the settings. The metric card is ``README.md``.
"""

from .config import CotKineticsConfig
from .forward import score_batch
from .kinetics import EnergyTerm, TraceScores, detection_metrics, register_energy_term

__all__ = ["CotKineticsConfig", "EnergyTerm", "TraceScores", "detection_metrics", "register_energy_term", "score_batch"]
