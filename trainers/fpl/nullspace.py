"""VPTPR: local updates of the vision prompt projected into the null space of the global prompt.

After each aggregation the server prompt P (n_ctx x d) gives F = P^T P.  Its singular directions, sorted
by decreasing singular value, are split: the top ``drop_ratio`` share (which spans P's row space when
n_ctx <= drop_ratio * d) is dropped and the rest form B.  Each local optimiser update U becomes
U B B^T / ||B B^T||_F, the projection of the study's ``AdamSVD`` (``fed_utils.py``; cf. "Learning Federated
Visual Prompt in Null Space").  Reconstructed (no released code) as a trainer: the study's VPTPR trainer is not
released, and ``AdamSVD`` projects Adam's update, while :class:`ProjectedOptimizer` projects the step of any
wrapped optimiser (SGD with momentum by default in :class:`~hf_trust.trainers.fpl.FPLConfig`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch


def null_space_projector(prompt: torch.Tensor, drop_ratio: float = 0.2) -> torch.Tensor:
    """``B B^T / ||B B^T||_F`` (d x d) for a prompt ``(n_ctx, d)``."""
    p = prompt.detach().double()
    f = p.t() @ p
    u, _s, _vh = torch.linalg.svd(f)  # singular values come sorted in descending order
    d = f.shape[0]
    drop = int(math.floor(drop_ratio * d))
    basis = u[:, drop:]
    proj = basis @ basis.t()
    return (proj / proj.norm()).to(prompt.dtype)


class ProjectedOptimizer:
    """Wraps an optimiser; after each step the change of the listed parameters is right-multiplied by
    their projector.  Parameters without a projector are updated unchanged."""

    def __init__(self, optimizer: torch.optim.Optimizer, projectors: dict[torch.Tensor, torch.Tensor]):
        self.optimizer = optimizer
        self.projectors = projectors

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Optional[object] = None):
        before = {p: p.detach().clone() for p in self.projectors}
        out = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        for p, proj in self.projectors.items():
            p.copy_(before[p] + (p - before[p]) @ proj.to(p.device, p.dtype))
        return out

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
