"""GGEUR: geometry-guided federated embedding augmentation (Ma et al., CVPR 2025).

Clients share per-class statistics of frozen-encoder embeddings; the server pools them exactly into
global covariance "shapes"; clients synthesise embeddings along those shapes (and, across domains,
around other domains' class prototypes) before an ordinary federated training of a linear head.
"""

from .augment import AugmentedSet, augment_multi_domain, augment_single_domain
from .config import GGEURConfig
from .embed import embed_dataset
from .geometry import GeometricShape, isotropic_shape
from .statistics import (
    ClassStatistics,
    ClientStatistics,
    aggregate,
    check_statistics_only,
    client_statistics,
    guide_set,
)
from .trainer import GGEURTrainer

__all__ = [
    "AugmentedSet",
    "ClassStatistics",
    "ClientStatistics",
    "GGEURConfig",
    "GGEURTrainer",
    "GeometricShape",
    "aggregate",
    "augment_multi_domain",
    "augment_single_domain",
    "check_statistics_only",
    "client_statistics",
    "embed_dataset",
    "guide_set",
    "isotropic_shape",
]
