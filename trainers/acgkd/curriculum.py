"""B4: easy-to-hard sampling of pseudo-graphs."""

from __future__ import annotations

import torch

from hf_trust.errors import HFTrustConfigError


class CurriculumSampler:
    """Samples a batch from the easiest ``r(t)·M`` graphs, ``r(t) = r0 + (1−r0)·min(1, t/(ramp·T))``.

    Args:
        num_graphs: bank size ``M``.
        total_steps: ``T`` (student steps).
        r0: initial share of the bank in the pool.
        ramp: the pool reaches the whole bank at ``ramp·T``.
        enabled: ``False`` samples uniformly from the whole bank (ablation).
        seed: seeds the sampling generator.
    """

    def __init__(
        self, num_graphs: int, total_steps: int, r0: float = 0.3, ramp: float = 0.6, enabled: bool = True, seed: int = 0
    ):
        if not 0 < r0 <= 1:
            raise HFTrustConfigError(f"curriculum r0 must be in (0, 1], got {r0}.")
        self.num_graphs, self.total_steps, self.r0, self.ramp, self.enabled = num_graphs, total_steps, r0, ramp, enabled
        self.order = torch.arange(num_graphs)
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, difficulty: torch.Tensor) -> None:
        """Re-rank the bank by difficulty (ascending: easiest first)."""
        self.order = torch.argsort(difficulty.detach().cpu(), stable=True)

    def ratio(self, step: int) -> float:
        if not self.enabled:
            return 1.0
        return self.r0 + (1 - self.r0) * min(1.0, step / max(self.ramp * self.total_steps, 1e-9))

    def pool(self, step: int) -> torch.Tensor:
        k = max(1, int(round(self.ratio(step) * self.num_graphs)))
        return self.order[:k]

    def sample(self, step: int, batch_size: int) -> torch.Tensor:
        pool = self.pool(step)
        take = torch.randperm(pool.numel(), generator=self.generator)[: min(batch_size, pool.numel())]
        return pool[take]
