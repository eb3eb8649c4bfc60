"""B2 and B4 math: BN-statistics matching, feature entropy, T²-scaled KD, adversarial temperature."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hf_trust.errors import HFTrustConfigError


class BNStatHooks:
    """DeepInversion-style hooks: for every ``BatchNorm1d`` of the teacher, the distance between the batch
    statistics of its input and its running statistics, ``‖μ−μ̂‖₂ + ‖σ²−σ̂²‖₂`` (spec B2)."""

    def __init__(self, model: nn.Module):
        self.losses: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
        if not self.handles:
            raise HFTrustConfigError(
                "The teacher has no BatchNorm1d layer, so the BN-statistics loss is undefined; "
                "set alpha_bn=0 or use a teacher with BatchNorm."
            )

    def _hook(self, module: nn.BatchNorm1d, inputs, _output) -> None:
        x = inputs[0]
        mean, var = x.mean(0), x.var(0, unbiased=False)
        # sqrt(Σ²+ε) rather than torch.norm: the norm's gradient is NaN at exactly 0.
        self.losses.append(
            torch.sqrt(((mean - module.running_mean) ** 2).sum() + 1e-8)
            + torch.sqrt(((var - module.running_var) ** 2).sum() + 1e-8)
        )

    def pop(self) -> torch.Tensor:
        loss = torch.stack(self.losses).sum() if self.losses else torch.zeros(())
        self.losses = []
        return loss

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def feature_entropy(x: torch.Tensor) -> torch.Tensor:
    """Mean node entropy of the soft features ``X``: pushing it down makes features one-hot."""
    return -(x * torch.log(x.clamp_min(1e-12))).sum(-1).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau) -> torch.Tensor:
    """``τ²·KL(softmax(z_T/τ) ‖ softmax(z_S/τ))``, batchmean. Log-targets: a softmax target underflows to
    exact 0 on confident graphs and gives NaN gradients."""
    return (tau**2) * F.kl_div(
        F.log_softmax(student_logits / tau, -1),
        F.log_softmax(teacher_logits / tau, -1),
        reduction="batchmean",
        log_target=True,
    )


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def grad_reverse(x: torch.Tensor, strength: float) -> torch.Tensor:
    return _GradReverse.apply(x, float(strength))


class AdvTemperature(nn.Module):
    """CTKD-style temperature ``τ = τ_min + (τ_max−τ_min)·σ(φ)`` learned through a gradient-reversal layer,
    so the optimizer that minimises the KD loss makes φ *maximise* it (spec B4).

    With ``adversarial=False`` τ stays at ``init`` (φ is frozen).
    """

    def __init__(self, init: float = 2.0, tau_min: float = 1.0, tau_max: float = 8.0, adversarial: bool = True):
        super().__init__()
        if not tau_min < init < tau_max:
            raise HFTrustConfigError(
                f"tau_init must lie strictly inside (tau_min, tau_max) = ({tau_min}, {tau_max}), got {init}."
            )
        self.tau_min, self.tau_max, self.adversarial = tau_min, tau_max, adversarial
        r = (init - tau_min) / (tau_max - tau_min)
        self.phi = nn.Parameter(torch.tensor(math.log(r / (1 - r))), requires_grad=adversarial)

    def forward(self, strength: float) -> torch.Tensor:
        phi = grad_reverse(self.phi, strength) if self.adversarial else self.phi
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(phi)

    @property
    def value(self) -> float:
        return float(self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(self.phi.detach()))


def adversarial_strength(step: int, total: int, lambda_max: float = 1.0) -> float:
    """``λ_adv(t) = λ_max·(1−cos(π·t/T))/2``: the reversal ramps from 0 to λ_max (easy → hard)."""
    return lambda_max * (1 - math.cos(math.pi * min(step, total) / max(total, 1))) / 2
