"""Sufficient-statistics aggregation for methods that share statistics instead of weights.

Per class c: S0 = n_c, S1 = Σ z, S2 = Σ z zᵀ, in float64.  Sums over clients (and over processes with
``accelerator.reduce``) give the pooled mean μ = S1/S0 and the pooled biased covariance
Σ = S2/S0 − μμᵀ exactly.  C·d² float64 values can reach hundreds of MB (CIFAR-100 at d = 512: 210 MB),
so the cross-process reduction runs over chunks of classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from hf_trust.errors import HFTrustDataError


@dataclass
class ClassMoments:
    """Per-class zeroth, first and second moments (float64): shapes (C,), (C, d), (C, d, d)."""

    s0: torch.Tensor
    s1: torch.Tensor
    s2: torch.Tensor

    @classmethod
    def zeros(cls, num_classes: int, dim: int) -> ClassMoments:
        f = torch.float64
        return cls(
            torch.zeros(num_classes, dtype=f),
            torch.zeros(num_classes, dim, dtype=f),
            torch.zeros(num_classes, dim, dim, dtype=f),
        )

    @classmethod
    def from_data(cls, features, labels: Sequence[int], num_classes: int) -> ClassMoments:
        z = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if z.ndim != 2 or len(z) != len(y):
            raise HFTrustDataError(
                f"features must be (n, d) with one label per row; got {tuple(z.shape)} and {len(y)} labels."
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise HFTrustDataError(
                f"labels must lie in [0, {num_classes}); got range [{int(y.min())}, {int(y.max())}]."
            )
        out = cls.zeros(num_classes, z.shape[1])
        out.s0.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
        out.s1.index_add_(0, y, z)
        out.s2.index_add_(0, y, z[:, :, None] * z[:, None, :])
        return out

    def __add__(self, other: ClassMoments) -> ClassMoments:
        return ClassMoments(self.s0 + other.s0, self.s1 + other.s1, self.s2 + other.s2)

    @property
    def num_classes(self) -> int:
        return len(self.s0)

    def pooled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (C, d) and biased covariances (C, d, d); classes with no samples give zeros."""
        n = self.s0.clamp(min=1)[:, None]
        mu = self.s1 / n
        cov = self.s2 / n[:, :, None] - mu[:, :, None] * mu[:, None, :]
        cov = (cov + cov.transpose(1, 2)) / 2
        empty = self.s0 == 0
        mu[empty] = 0
        cov[empty] = 0
        return mu, cov


def reduce_moments(
    moments: ClassMoments,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: Optional[int] = 16,
) -> ClassMoments:
    """Sum ``moments`` over processes with ``reduce_sum`` (e.g. ``FederatedTrainer.reduce_sum``), in chunks
    of ``chunk_size`` classes so that at most ``chunk_size·d²`` extra values are in flight."""
    c = moments.num_classes
    step = c if not chunk_size else chunk_size
    s0 = reduce_sum(moments.s0.clone())
    s1 = torch.empty_like(moments.s1)
    s2 = torch.empty_like(moments.s2)
    for start in range(0, c, step):
        sl = slice(start, min(c, start + step))
        s1[sl] = reduce_sum(moments.s1[sl].contiguous())
        s2[sl] = reduce_sum(moments.s2[sl].contiguous())
    return ClassMoments(s0, s1, s2)
