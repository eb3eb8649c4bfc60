"""Fake-exposing measurements of ACGKD (spec section e) on the structural motif task."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_trust.trainers.acgkd import ACGKDCore, acgkd_distill, graph_accuracy

from .fixtures import motif_teacher, small_args, student


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return motif_teacher(1)


@pytest.fixture(scope="module")
def distilled(task, tmp_path_factory):
    teacher, test = task
    head = copy.deepcopy(teacher.classifier.state_dict())
    model, core = acgkd_distill(
        teacher, student(0), small_args(tmp_path_factory.mktemp("acgkd")), progress=False, return_core=True
    )
    return model, core, head


def test_teacher_is_perfect_on_the_motif_task(task):
    teacher, test = task
    assert graph_accuracy(teacher, test) == 1.0


def test_acgkd_reaches_teacher_while_controls_stay_at_chance(task, distilled, tmp_path):
    """Teacher seed 1 (the module's fixture). The same claim on teacher seed 0 is tested below and does
    not hold, so this is a per-teacher result, not a guarantee of the method at this size."""
    teacher, test = task
    model, core, _ = distilled
    t_acc = graph_accuracy(teacher, test)
    assert graph_accuracy(model, test) / t_acc >= 0.95
    untrained = ACGKDCore(teacher, student(0), small_args(tmp_path)).model
    assert graph_accuracy(untrained, test) <= 0.6
    randg = acgkd_distill(teacher, student(0), small_args(tmp_path, gen_mode="randg"), progress=False)
    assert graph_accuracy(randg, test) <= 0.6


@pytest.mark.xfail(
    strict=True,
    reason="measured student/teacher 0.515 (default), 0.50 (lr 1e-2), 0.50 (M = 128) on teacher seed 0: the "
    "pseudo-graphs satisfy this teacher (it gives 0.95 of them their target class) without covering the real "
    "motif distribution (teacher seeds 1 and 2 reach 1.0); benchmarks/results/acgkd.md. Strict: if it starts to hold, the claims must be updated.",
)
def test_acgkd_reaches_teacher_on_a_second_teacher_seed(tmp_path):
    teacher, test = motif_teacher(0)
    assert graph_accuracy(teacher, test) == 1.0  # the teacher itself is perfect here too
    model = acgkd_distill(teacher, student(0), small_args(tmp_path), progress=False)
    assert graph_accuracy(model, test) >= 0.95


def test_generation_inverts_the_teacher(distilled):
    _, core, _ = distilled
    assert core.teacher_accuracy_on_bank() >= 0.85
    ce = core.history["warmup_ce"]
    assert ce[-1] < ce[0] / 20
    # The BN distance is logged, not asserted: with α_BN = 0.01 it does not fall on this task
    # (benchmarks/results/acgkd.md records the measured values).
    assert all(torch.isfinite(torch.tensor(core.history["warmup_bn"])))


def _rewired(bank, seed: int):
    """Same X and θ values, each graph's candidate pairs moved onto random node pairs."""
    bank = copy.deepcopy(bank)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in range(bank.num_graphs):
            s, e = int(bank.pair_ptr[i]), int(bank.pair_ptr[i + 1])
            n, off = int(bank.num_nodes[i]), int(bank.node_ptr[i])
            iu = torch.triu_indices(n, n, 1)
            bank.pairs[:, s:e] = iu[:, torch.randperm(iu.size(1), generator=g)[: e - s]] + off
    return bank


def test_rewiring_the_bank_destroys_what_the_teacher_recognises(task, tmp_path):
    """Spec measurement 4 on the bank frozen after warm-up: moving the learned edges onto random pairs makes
    the teacher stop recognising its own pseudo-graphs, so the structure carries learned signal (a silently
    zero structure gradient would leave the two equal).

    The spec's second half (the student falls to chance) did not reproduce here: a student fitted to the
    rewired warm-up bank still reached 1.0 on the real test set, like one fitted to the intact bank
    (benchmarks/results/acgkd.md), so only the teacher-side effect is asserted."""
    teacher, _ = task
    core = ACGKDCore(teacher, student(0), small_args(tmp_path))
    core.warmup()
    frozen = dict(gen_warmup_steps=0, gen_steps_per_student_step=0)
    intact = core.teacher_accuracy_on_bank()
    rewired = [
        ACGKDCore(
            teacher, student(0), small_args(tmp_path, **frozen), bank=_rewired(core.bank, s)
        ).teacher_accuracy_on_bank()
        for s in range(3)
    ]
    assert intact >= 0.75
    assert sum(rewired) / 3 <= intact - 0.08  # measured: 0.81 → 0.70 (rewiring seeds 0-2)


def test_teacher_head_bit_identical_and_not_trained(task, distilled):
    teacher, _ = task
    model, _, head = distilled
    assert model.student.head is teacher.classifier
    for k, v in head.items():
        assert torch.equal(model.student.head.state_dict()[k], v)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(n.startswith("student.head") for n in trainable)


def test_tau_moved_in_adversarial_run_and_fixed_otherwise(task, distilled, tmp_path):
    teacher, _ = task
    model, core, _ = distilled
    assert abs(model.temperature.value - 2.0) > 0.05
    fixed = acgkd_distill(
        teacher,
        student(0),
        small_args(tmp_path, adversarial_temperature=False, max_steps=20, gen_warmup_steps=5),
        progress=False,
    )
    assert fixed.temperature.value == pytest.approx(2.0, abs=1e-6)


def test_gfkd_arm_baseline_updates_structure_without_backprop(task, tmp_path):
    teacher, _ = task
    core = ACGKDCore(teacher, student(0), small_args(tmp_path, gen_mode="gfkd_arm"))
    before = core.bank.theta.detach().clone()
    core.generator_step(torch.arange(16), 0)
    changed = core.bank.theta.detach() != before
    assert changed.any() and torch.isfinite(core.bank.theta).all()
    # Only the sampled graphs' pairs may move.
    assert not changed[int(core.bank.pair_ptr[16]) :].any()
