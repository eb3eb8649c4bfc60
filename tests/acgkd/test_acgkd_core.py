"""Plain-module pieces of ACGKD: bank, losses, temperature, curriculum, model contract, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from hf_trust.errors import HFTrustConfigError, HFTrustStateError, HFTrustTypeError
from hf_trust.trainers.acgkd import (
    AdvTemperature,
    BNStatHooks,
    CurriculumSampler,
    GNNClassifier,
    LiftedStudent,
    PseudoGraphBank,
    adversarial_strength,
    feature_entropy,
    kd_loss,
)


def test_bank_parameters_linear_in_xi():
    counts = {}
    for xi in (0.1, 0.2, 0.4, 0.8):
        bank = PseudoGraphBank(40, 7, (20, 30), xi=xi, seed=0)
        n = bank.num_nodes.tolist()
        assert bank.theta.numel() == sum(min(k * (k - 1) // 2, max(k, math.ceil(xi * k * (k - 1) / 2))) for k in n)
        counts[xi] = bank.theta.numel()
    # θ count ∝ ξ (above the ring floor): doubling ξ doubles it to within the ceil rounding.
    assert counts[0.4] / counts[0.2] == pytest.approx(2.0, rel=0.02)
    assert counts[0.8] / counts[0.4] == pytest.approx(2.0, rel=0.02)
    assert counts[0.2] / counts[0.1] == pytest.approx(2.0, rel=0.05)


def test_density_aware_init_hits_target_degree():
    for xi, deg in ((0.2, 1.5), (1.0, 3.0)):
        bank = PseudoGraphBank(200, 7, (10, 29), xi=xi, target_mean_degree=deg, seed=1)
        expected = []
        for g in range(bank.num_graphs):
            p = torch.sigmoid(bank.theta.detach()[bank.pair_ptr[g] : bank.pair_ptr[g + 1]]).sum()
            expected.append(float(2 * p / bank.num_nodes[g]))
        assert sum(expected) / len(expected) == pytest.approx(deg, rel=1e-3)


def test_batch_edges_stay_inside_graphs_and_are_mirrored():
    bank = PseudoGraphBank(10, 5, (4, 9), xi=0.5, seed=0)
    idx = torch.tensor([7, 2, 5])
    g = bank.sample(idx, 0.5)
    assert g.x.shape[0] == int(bank.num_nodes[idx].sum())
    assert torch.equal(g.batch[g.edge_index[0]], g.batch[g.edge_index[1]])
    half = g.edge_index.size(1) // 2
    assert torch.equal(g.edge_index[:, :half], g.edge_index[:, half:].flip(0))
    assert torch.equal(g.edge_weight[:half], g.edge_weight[half:])
    assert torch.allclose(g.x.sum(-1), torch.ones(g.x.size(0)))


def test_hard_and_straight_through_modes():
    bank = PseudoGraphBank(6, 5, (5, 8), xi=0.6, seed=0)
    with torch.no_grad():
        bank.theta.copy_(torch.randn_like(bank.theta))
    hard = bank.sample(mode="hard")
    assert torch.equal(hard.edge_weight, (torch.cat([bank.theta, bank.theta]) > 0).float())
    st = bank.sample(mode="straight_through", generator=torch.Generator().manual_seed(0))
    w = st.edge_weight.detach()
    assert torch.allclose(w, w.round(), atol=1e-6) and set(w.round().unique().tolist()) <= {0.0, 1.0}
    st.edge_weight.sum().backward()
    assert bank.theta.grad is not None and bank.theta.grad.abs().sum() > 0


def test_theta_grad_nonzero_and_finite_through_teacher():
    torch.manual_seed(0)
    teacher = GNNClassifier(5, 16, 3, 3, "gin").eval()
    bank = PseudoGraphBank(12, 5, (6, 10), xi=0.3, seed=0)
    hooks = BNStatHooks(teacher)
    g = bank.sample(temperature=0.5)
    logits = teacher(*g.inputs())
    loss = nn.functional.cross_entropy(logits, torch.arange(12) % 3) + 0.01 * hooks.pop() + 0.01 * feature_entropy(g.x)
    loss.backward()
    for p in (bank.theta, bank.z):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert (bank.theta.grad != 0).float().mean() > 0.5


def test_gcn_teacher_gets_structure_gradient_too():
    teacher = GNNClassifier(5, 16, 2, 2, "gcn").eval()
    bank = PseudoGraphBank(4, 5, (6, 10), xi=0.5, seed=0)
    teacher(*bank.sample().inputs()).sum().backward()
    assert torch.isfinite(bank.theta.grad).all() and bank.theta.grad.abs().sum() > 0


def test_bn_hooks_match_running_stats_distance():
    bn = nn.BatchNorm1d(4).eval()
    bn.running_mean.fill_(1.0)
    hooks = BNStatHooks(nn.Sequential(bn))
    x = torch.randn(50, 4)
    bn(x)
    want = torch.linalg.norm(x.mean(0) - 1.0) + torch.linalg.norm(x.var(0, unbiased=False) - 1.0)
    assert float(hooks.pop()) == pytest.approx(float(want), rel=1e-5)


def test_kd_loss_no_nan_with_saturated_teacher_over_1k_steps():
    torch.manual_seed(0)
    student = nn.Linear(8, 3)
    temp = AdvTemperature(2.0, 1.0, 8.0, adversarial=True)
    opt = torch.optim.Adam(list(student.parameters()) + [temp.phi], lr=1e-2)
    for t in range(1000):
        x = torch.randn(16, 8)
        zt = torch.randn(16, 3) * 500.0  # softmax(z_T/τ) underflows to exact zeros
        zt.requires_grad_(True)
        loss = kd_loss(student(x), zt, temp(adversarial_strength(t, 1000)))
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(zt.grad).all() and torch.isfinite(temp.phi.grad)
        opt.step()
    assert kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 2.0) == 0


def test_temperature_moves_only_in_adversarial_mode():
    x, zt = torch.randn(32, 8), torch.randn(32, 3) * 3
    for adversarial in (True, False):
        torch.manual_seed(0)
        student = nn.Linear(8, 3)
        temp = AdvTemperature(2.0, 1.0, 8.0, adversarial=adversarial)
        params = list(student.parameters()) + ([temp.phi] if adversarial else [])
        opt = torch.optim.SGD(params, lr=0.5)
        for _ in range(50):
            loss = kd_loss(student(x), zt, temp(1.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if adversarial:
            assert abs(temp.value - 2.0) > 0.05
        else:
            assert temp.value == pytest.approx(2.0, abs=1e-6)


def test_gradient_reversal_makes_tau_ascend_the_kd_loss():
    x, zt = torch.randn(32, 8), torch.randn(32, 3) * 3
    student = nn.Linear(8, 3)
    temp = AdvTemperature(2.0, 1.0, 8.0)
    kd_loss(student(x), zt, temp(1.0)).backward()
    plain = temp.phi.detach().clone().requires_grad_(True)
    tau = 1.0 + 7.0 * torch.sigmoid(plain)
    torch.autograd.grad(kd_loss(student(x), zt, tau), plain)[0]
    assert float(temp.phi.grad) == pytest.approx(
        -float(torch.autograd.grad(kd_loss(student(x), zt, 1.0 + 7.0 * torch.sigmoid(plain)), plain)[0]), rel=1e-5
    )
    assert adversarial_strength(0, 100) == 0 and adversarial_strength(100, 100) == pytest.approx(1.0)


def test_curriculum_pool_grows_from_easiest():
    s = CurriculumSampler(100, total_steps=100, r0=0.3, ramp=0.6, seed=0)
    s.update(torch.arange(100, 0, -1).float())  # graph 99 is easiest
    assert s.pool(0).numel() == 30 and set(s.pool(0).tolist()) == set(range(70, 100))
    assert s.pool(30).numel() == 65 and s.pool(60).numel() == 100
    assert set(s.sample(0, 16).tolist()) <= set(range(70, 100))
    assert CurriculumSampler(100, 100, enabled=False).pool(0).numel() == 100


def test_lifted_student_reuses_frozen_teacher_head():
    teacher = GNNClassifier(5, 64, 3, 3, "gin")
    lifted = LiftedStudent(GNNClassifier(5, 16, None, 2, "gcn"), teacher)
    assert lifted.head is teacher.classifier and not any(p.requires_grad for p in lifted.head.parameters())
    bank = PseudoGraphBank(3, 5, (5, 7), seed=0)
    assert lifted(*bank.sample().inputs()).shape == (3, 3)
    assert lifted.deployed_parameters() < sum(p.numel() for p in teacher.parameters())


def test_clear_errors():
    class NoWeights(nn.Module):
        def forward(self, x, edge_index, batch=None):
            return x

    # Each refusal is an hf-trust error of the fitting kind (config errors are also ValueErrors) and names the fix.
    with pytest.raises(HFTrustTypeError, match="edge_weight.*Use trainers.acgkd.GNNClassifier"):
        LiftedStudent(GNNClassifier(5, 8, None), NoWeights())
    with pytest.raises(HFTrustConfigError, match="xi"):
        PseudoGraphBank(4, 5, xi=0.0)
    with pytest.raises(HFTrustConfigError, match="n_range"):
        PseudoGraphBank(4, 5, n_range=(8, 3))
    with pytest.raises(HFTrustConfigError, match="conv"):
        GNNClassifier(5, 8, 2, conv="gat")
    with pytest.raises(HFTrustConfigError, match="tau_init"):
        AdvTemperature(9.0, 1.0, 8.0)
    with pytest.raises(HFTrustStateError, match="num_classes=None"):
        GNNClassifier(5, 8, None)(torch.eye(5), torch.zeros(2, 0, dtype=torch.long))
