"""ACGKD: Adversarial Curriculum Graph-Free Knowledge Distillation (Jia et al., arXiv:2504.00540).

Plain core: :class:`PseudoGraphBank`, :class:`BNStatHooks`, :func:`feature_entropy`, :func:`kd_loss`,
:class:`AdvTemperature`, :class:`CurriculumSampler`, :class:`ACGKDCore`; models: :class:`GNNClassifier`
(weighted GIN / GCN), :class:`LiftedStudent`; HF layer: :class:`ACGKDConfig`, :class:`ACGKDTrainer`;
plain loop: :func:`acgkd_distill`. Baselines: ``gen_mode="gfkd_arm" | "deepinv_features" | "randg"``.
"""

# ruff: noqa: E402  (the extra is checked before the submodules that need it are imported)
from hf_trust.errors import require_extra

# ACGKD's bank, models and trainer are PyG modules: without the [graphs] extra, say so here rather than
# deep inside a submodule.
require_extra("torch_geometric", extra="graphs", feature="ACGKD (hf_trust.trainers.acgkd)")

from .bank import GraphBatch, PseudoGraphBank
from .config import GEN_MODES, ACGKDConfig
from .curriculum import CurriculumSampler
from .distiller import ACGKDCore, DistillModel, graph_accuracy
from .loop import acgkd_distill
from .losses import AdvTemperature, BNStatHooks, adversarial_strength, feature_entropy, grad_reverse, kd_loss
from .models import GNNClassifier, LiftedStudent, WeightedGINConv, check_weighted_teacher
from .motifs import make_motif_graphs, train_teacher
from .trainer import ACGKDTrainer, StepDataset, graph_collator

__all__ = [
    "ACGKDConfig",
    "ACGKDTrainer",
    "acgkd_distill",
    "ACGKDCore",
    "DistillModel",
    "GEN_MODES",
    "GraphBatch",
    "PseudoGraphBank",
    "CurriculumSampler",
    "AdvTemperature",
    "BNStatHooks",
    "adversarial_strength",
    "feature_entropy",
    "grad_reverse",
    "kd_loss",
    "GNNClassifier",
    "LiftedStudent",
    "WeightedGINConv",
    "check_weighted_teacher",
    "graph_accuracy",
    "make_motif_graphs",
    "train_teacher",
    "StepDataset",
    "graph_collator",
]
