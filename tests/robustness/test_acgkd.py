"""ACGKD: the per-curriculum-stage accuracy curve is a read-only measurement."""

from __future__ import annotations

import pytest
import torch

from hf_trust.trainers.acgkd import acgkd_distill
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
