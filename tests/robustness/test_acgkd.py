"""ACGKD: the per-curriculum-stage accuracy curve is a read-only measurement."""

from __future__ import annotations

import pytest
import torch

from hf_trust.errors import HFTrustConfigError
from hf_trust.trainers.acgkd import GNNClassifier, acgkd_distill
from tests.acgkd.fixtures import motif_teacher, small_args, student


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return motif_teacher(1)


def test_eval_curve_changes_nothing_and_matches_an_independent_count(task, tmp_path):
    teacher, test = task
    args = dict(max_steps=12, gen_warmup_steps=4, num_pseudo_graphs=16, pseudo_batch_size=8, curriculum_every=4)
    plain = acgkd_distill(teacher, student(0), small_args(tmp_path / "a", **args), progress=False)
    watched, core = acgkd_distill(
        teacher,
        student(0),
        small_args(tmp_path / "b", **args),
        eval_graphs=test[:30],
        eval_every=5,
        progress=False,
        return_core=True,
    )
    # Evaluating during training must not move a weight nor consume a random draw of training.
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), name
    curve = core.history["eval_curve"]
    assert [r["step"] for r in curve] == [0, 5, 10, 12]
    # The pool share is the curriculum's r(t) = r0 + (1 - r0) * min(1, t / (ramp * T)) with its defaults.
    r0, ramp = small_args(tmp_path).curriculum_r0, small_args(tmp_path).curriculum_ramp
    for r in curve:
        assert r["pool_share"] == pytest.approx(r0 + (1 - r0) * min(1.0, r["step"] / (ramp * 12)))
    # The last point is the final student's accuracy, counted here graph by graph.
    watched.eval()
    with torch.no_grad():
        hits = sum(
            int(
                watched(g.x, g.edge_index, batch=torch.zeros(g.num_nodes, dtype=torch.long)).argmax(-1).item()
                == int(g.y)
            )
            for g in test[:30]
        )
    assert curve[-1]["accuracy"] == pytest.approx(hits / 30, abs=1e-12)


# ---------------------------------------------------------------- teacher/student pairs that cannot be distilled
_TINY = dict(max_steps=4, gen_warmup_steps=2, num_pseudo_graphs=8, pseudo_batch_size=4, curriculum_every=2)


def _gin(in_dim: int, classes, hidden: int = 8) -> GNNClassifier:
    torch.manual_seed(0)
    return GNNClassifier(in_dim, hidden, classes, 2, "gin")


@pytest.mark.parametrize(
    "teacher, student_model, extra, message",
    [
        # one class: softmax ≡ 1, so the warm-up cross-entropy was exactly 0 and the run "succeeded"
        (
            lambda: _gin(7, 1, 16),
            lambda: _gin(7, None),
            {},
            r"teacher has 1 class\(es\).*warm-up cross-entropy and the KD loss are exactly 0",
        ),
        # no student: "'NoneType' object has no attribute 'hidden_dim'"
        (lambda: _gin(7, 2, 16), lambda: None, {}, r"student must be a torch.nn.Module .* got None"),
        # a student head with 3 classes against a 2-class teacher: a size mismatch inside kd_loss
        (
            lambda: _gin(7, 2, 16),
            lambda: _gin(7, 3),
            {"reuse_teacher_head": False},
            r"student predicts 3 classes but the teacher 2.*num_classes=2",
        ),
        # a student reading 5 node features from the teacher's 7-wide pseudo-graphs: a matmul shape error
        (
            lambda: _gin(7, 2, 16),
            lambda: _gin(5, None),
            {},
            r"student reads 5 node features \(student.in_dim=5\) but the teacher.* reads 7.*in_dim=7",
        ),
        (
            lambda: _gin(7, 2, 16),
            lambda: _gin(5, 2),
            {"reuse_teacher_head": False},
            r"student reads 5 node features .* reads 7",
        ),
    ],
    ids=["one_class_teacher", "no_student", "class_count", "input_width_lifted", "input_width_own_head"],
)
def test_pairs_that_cannot_be_distilled_are_refused(tmp_path, teacher, student_model, extra, message):
    """Errors, before any pseudo-graph is built: each case either trained nothing while looking finished
    (one class) or failed deep inside the losses with a message naming neither model."""
    with pytest.raises(HFTrustConfigError, match=message):
        acgkd_distill(teacher(), student_model(), small_args(tmp_path, **_TINY, **extra), progress=False)


def test_a_matching_pair_still_distils(tmp_path):
    """The checks let a valid pair through, and its warm-up cross-entropy is a real (non-zero) loss."""
    _, core = acgkd_distill(
        _gin(7, 2, 16), _gin(7, None), small_args(tmp_path, **_TINY), progress=False, return_core=True
    )
    assert len(core.history["warmup_ce"]) == 2 and all(ce > 0 for ce in core.history["warmup_ce"])
