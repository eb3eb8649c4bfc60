"""Fake-exposing measurements of ACGKD (spec section e) on the structural motif task."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_trust.trainers.acgkd import ACGKDCore, acgkd_distill, graph_accuracy

from .fixtures import motif_teacher, small_args, student

#: Teacher seeds of the outcome tests: each seed draws its own motif graphs and trains its own teacher, so every
#: outcome claim below is a count over five independent tasks rather than what one run happened to reach. Each
#: count has one seed of slack below the smallest count measured natively (an AVX2 CPU: same kernels as the avx2
#: emulation, teacher weights bit-identical) and under the default emulation (SSE4_2); the docstrings list the runs.
TEACHER_SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def tasks():
    torch.set_num_threads(1)
    return {seed: motif_teacher(seed) for seed in TEACHER_SEEDS}


@pytest.fixture(scope="module")
def task(tasks):
    """Teacher seed 1, for the mechanism tests (identities that hold for any teacher)."""
    return tasks[1]


@pytest.fixture(scope="module")
def distilled(tasks, tmp_path_factory):
    """One ACGKD run per teacher seed (same student seed and settings): ``{seed: (model, core, head)}``."""
    out = {}
    for seed, (teacher, _) in tasks.items():
        head = copy.deepcopy(teacher.classifier.state_dict())
        model, core = acgkd_distill(
            teacher, student(0), small_args(tmp_path_factory.mktemp("acgkd")), progress=False, return_core=True
        )
        out[seed] = (model, core, head)
    return out


@pytest.mark.trains
def test_teachers_learn_the_motif_task(tasks):
    """Test accuracy of the five teachers, seeds 0-4 (teacher seed 1 scored 0.995 on an AVX-512 machine):
    native (AVX2) = avx2 emulation:   1.000  1.000  1.000  1.000  1.000
    default (SSE4_2):                 1.000  1.000  1.000  1.000  1.000"""
    accs = [graph_accuracy(teacher, test) for teacher, test in tasks.values()]
    assert min(accs) >= 0.98, accs


@pytest.mark.trains
def test_acgkd_reaches_teacher_in_some_tasks_while_controls_stay_at_chance(tasks, distilled, tmp_path):
    """Student/teacher accuracy ratio on the real test graphs, teacher seeds 0-4 (chance = 0.5):
    native (AVX2) = avx2 emulation:   0.50  0.78  1.00  0.98  0.99
    default (SSE4_2):                 0.71  1.00  1.00  0.63  0.86
    The ≥ 0.95 target is a per-teacher result, not a guarantee of the method at this size: for some teachers
    the pseudo-graphs satisfy the teacher (next test) without covering the real motif distribution, and which
    teachers reach it changes with the CPU's float rounding. Counts ≥ 0.95: 3 native, 2 default (asserted ≥ 1);
    ≥ 0.7: 4 and 4 (asserted ≥ 3).

    Controls. The untrained student is at 0.5 for every teacher. The RandG student (bank never trained) is a
    training outcome too, and not always at chance (≤ 0.6: 5 native, 4 default; asserted ≥ 3):
    native (AVX2) = avx2 emulation:   0.54  0.50  0.58  0.44  0.50
    default (SSE4_2):                 0.50  0.50  0.50  0.50  0.92"""
    ratios, randg_accs, untrained_accs = [], [], []
    for seed, (teacher, test) in tasks.items():
        model, _, _ = distilled[seed]
        ratios.append(graph_accuracy(model, test) / graph_accuracy(teacher, test))
        randg = acgkd_distill(teacher, student(0), small_args(tmp_path, gen_mode="randg"), progress=False)
        randg_accs.append(graph_accuracy(randg, test))
        untrained_accs.append(graph_accuracy(ACGKDCore(teacher, student(0), small_args(tmp_path)).model, test))
    assert sum(r >= 0.95 for r in ratios) >= 1, ratios
    assert sum(r >= 0.7 for r in ratios) >= 3, ratios
    assert max(untrained_accs) <= 0.6, untrained_accs
    assert sum(a <= 0.6 for a in randg_accs) >= 3, randg_accs


@pytest.mark.trains
def test_generation_inverts_the_teacher(distilled):
    """The teacher recognises its own pseudo-graphs (hard edges) after distillation, and the warm-up CE falls
    at least 20×, over the five teacher seeds 0-4. Teacher accuracy on its bank (≥ 0.85: 4 native, 4 default;
    asserted ≥ 3):
    native (AVX2) = avx2 emulation:   0.95  0.91  0.92  0.62  0.92
    default (SSE4_2):                 0.92  0.83  0.92  0.95  1.00
    Warm-up CE, first / last iteration (≥ 20: 5 and 5; asserted ≥ 4):
    native (AVX2) = avx2 emulation:   3910  1071  289  4578  66
    default (SSE4_2):                 41  49  311  244  43"""
    bank_accs, falls = [], []
    for _, core, _ in distilled.values():
        bank_accs.append(core.teacher_accuracy_on_bank())
        ce = core.history["warmup_ce"]
        falls.append(ce[0] / ce[-1])
        # The BN distance is logged, not asserted: with α_BN = 0.01 it does not fall on this task
        # (benchmarks/results/acgkd.md records the measured values).
        assert all(torch.isfinite(torch.tensor(core.history["warmup_bn"])))
    assert sum(a >= 0.85 for a in bank_accs) >= 3, bank_accs
    assert sum(f >= 20 for f in falls) >= 4, falls


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


@pytest.mark.trains
def test_rewiring_the_bank_destroys_what_the_teacher_recognises(tasks, tmp_path):
    """Spec measurement 4 on the bank frozen after warm-up: moving the learned edges onto random pairs makes
    the teacher stop recognising its own pseudo-graphs, so the structure carries learned signal (a silently
    zero structure gradient would leave the two equal).

    Teacher accuracy on the bank, intact → mean over rewiring seeds 0-2, per teacher seed 0-4 (a drop ≥ 0.05:
    4 native, 4 default; asserted ≥ 3):
    native (AVX2) = avx2 emulation:   0.86→0.84  0.81→0.70  0.81→0.76  0.64→0.44  0.78→0.69
    default (SSE4_2):                 0.81→0.78  0.70→0.58  0.81→0.76  0.89→0.78  0.80→0.66

    The spec's second half (the student falls to chance) did not reproduce here: a student fitted to the
    rewired warm-up bank still reached 1.0 on the real test set, like one fitted to the intact bank
    (benchmarks/results/acgkd.md), so only the teacher-side effect is asserted."""
    frozen = dict(gen_warmup_steps=0, gen_steps_per_student_step=0)
    drops = []
    for teacher, _ in tasks.values():
        core = ACGKDCore(teacher, student(0), small_args(tmp_path))
        core.warmup()
        intact = core.teacher_accuracy_on_bank()
        rewired = [
            ACGKDCore(
                teacher, student(0), small_args(tmp_path, **frozen), bank=_rewired(core.bank, s)
            ).teacher_accuracy_on_bank()
            for s in range(3)
        ]
        drops.append((intact, sum(rewired) / 3))
    assert sum(i - r >= 0.05 for i, r in drops) >= 3, drops


def test_teacher_head_bit_identical_and_not_trained(tasks, distilled):
    for seed, (model, _, head) in distilled.items():
        teacher, _ = tasks[seed]
        assert model.student.head is teacher.classifier
        for k, v in head.items():
            assert torch.equal(model.student.head.state_dict()[k], v)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and not any(n.startswith("student.head") for n in trainable)


@pytest.mark.trains
def test_tau_moved_in_adversarial_run_and_fixed_otherwise(task, distilled, tmp_path):
    """The adversarial temperature moved away from τ₀ = 2 in every one of the five runs (final τ per teacher
    seed 0-4:
    native (AVX2) = avx2 emulation:   5.30  5.25  5.11  5.33  5.30
    default (SSE4_2):                 5.25  5.28  5.03  5.13  5.29);
    without the adversarial mode it stays at τ₀ exactly (a mechanism, one run)."""
    taus = [model.temperature.value for model, _, _ in distilled.values()]
    assert min(abs(t - 2.0) for t in taus) > 0.05, taus
    teacher, _ = task
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
