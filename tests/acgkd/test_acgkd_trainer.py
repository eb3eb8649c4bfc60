"""ACGKDTrainer: same result as the plain loop, evaluation on real graphs, checkpoints, leakage guard,
and an `accelerate launch` run on two CPU processes."""

from __future__ import annotations

import pytest
import torch

from hf_trust.errors import HFTrustConfigError, HFTrustTypeError
from hf_trust.trainers.acgkd import ACGKDConfig, ACGKDTrainer, StepDataset, acgkd_distill

from .fixtures import motif_teacher, small_args, student


@pytest.fixture(scope="module")
def task():
    return motif_teacher(1)


def _short(tmp, **kw):
    return small_args(
        tmp, max_steps=12, gen_warmup_steps=10, num_pseudo_graphs=24, pseudo_batch_size=8, curriculum_every=5, **kw
    )


@pytest.mark.parametrize("steps", [1, 12])
def test_trainer_matches_plain_loop(task, tmp_path, steps):
    """Same seed → the Trainer and ``acgkd_distill`` give bit-identical students (curriculum re-ranks included)."""
    teacher, _ = task
    kw = dict(max_steps=steps, gen_warmup_steps=10, num_pseudo_graphs=24, pseudo_batch_size=8, curriculum_every=5)
    trainer = ACGKDTrainer(teacher=teacher, student=student(0), args=small_args(tmp_path / "t", **kw))
    trainer.train()
    plain = acgkd_distill(teacher, student(0), small_args(tmp_path / "p", **kw), progress=False)
    a, b = trainer.model.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(
        a["student.proj.lin.weight"],
        ACGKDTrainer(
            teacher=teacher, student=student(0), args=small_args(tmp_path / "u", max_steps=1)
        ).model.state_dict()["student.proj.lin.weight"],
    )


@pytest.mark.trains
def test_trainer_trains_and_evaluates_on_real_graphs(task, tmp_path):
    teacher, test = task
    trainer = ACGKDTrainer(teacher=teacher, student=student(0), args=_short(tmp_path / "t"), eval_dataset=test[:60])
    assert isinstance(trainer.train_dataset, StepDataset)  # the distillation path holds no real graph
    trainer.train()
    assert trainer.core.history["tau"][-1] != 2.0
    metrics = trainer.evaluate()
    from hf_trust.trainers.acgkd import graph_accuracy

    assert metrics["eval_accuracy"] == pytest.approx(graph_accuracy(trainer.model, test[:60]), abs=1e-6)
    assert trainer.core.history["warmup_ce"][-1] < trainer.core.history["warmup_ce"][0]


def test_trainer_writes_checkpoints_that_reload(task, tmp_path):
    teacher, _ = task
    args = _short(tmp_path, save_strategy="steps", save_steps=6)
    trainer = ACGKDTrainer(teacher=teacher, student=student(0), args=args)
    trainer.train()
    ckpt = tmp_path / "checkpoint-12"
    files = {p.name for p in ckpt.iterdir()}
    assert "model.safetensors" in files or "pytorch_model.bin" in files
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "model.safetensors"))
    live = trainer.model.state_dict()
    assert all(torch.equal(saved[k], live[k]) for k in saved)


def test_trainer_refuses_real_training_data_and_wrong_args(task, tmp_path):
    teacher, test = task
    with pytest.raises(HFTrustConfigError, match="data-free"):
        ACGKDTrainer(teacher=teacher, student=student(0), args=_short(tmp_path), train_dataset=test)
    with pytest.raises(HFTrustTypeError, match="ACGKDConfig"):
        ACGKDTrainer(teacher=teacher, student=student(0), args=object())
    with pytest.raises(HFTrustConfigError, match="gen_mode"):
        ACGKDConfig(output_dir=str(tmp_path), max_steps=5, gen_mode="magic")
    with pytest.raises(HFTrustConfigError, match="max_steps.*pass e.g. max_steps="):
        ACGKDConfig(output_dir=str(tmp_path))
    with pytest.raises(HFTrustConfigError, match="pseudo_batch_size"):
        ACGKDConfig(output_dir=str(tmp_path), max_steps=5, pseudo_batch_size=0)


def test_accelerate_launch_two_cpu_processes(tmp_path):
    from tests.launch import accelerate_launch

    res = accelerate_launch("tests.acgkd.mp_acgkd", tmp_path / "mp.pt", processes=2, env={"ACCELERATE_USE_CPU": "true"})
    assert res["world"] == 2
    (s0, th0), (s1, th1) = res["gathered"]
    # DDP keeps the student's parameters (and φ) identical on both ranks; each rank refines its own copy of
    # the bank (same init, rank-specific curriculum draws), so the banks differ but stay finite.
    for k in (k for k in s0 if "running" not in k and "num_batches" not in k):
        assert torch.allclose(s0[k], s1[k], atol=1e-6), k
    assert torch.isfinite(th0).all() and torch.isfinite(th1).all() and th0.shape == th1.shape
    # The accuracy the two ranks reported (each evaluates its shard, the Trainer gathers) must be the accuracy
    # of the synchronised student on all 40 graphs, recomputed here one graph at a time from rank 0's weights.
    from hf_trust.trainers.acgkd import ACGKDCore

    teacher, test = motif_teacher(1)
    model = ACGKDCore(teacher, student(0), small_args(tmp_path / "re")).model
    model.load_state_dict(s0)
    model.eval()
    with torch.no_grad():
        hits = [
            int(
                model(g.x, g.edge_index, batch=torch.zeros(g.num_nodes, dtype=torch.long)).argmax(-1).item() == int(g.y)
            )
            for g in test[:40]
        ]
    assert res["metrics"]["eval_accuracy"] == pytest.approx(sum(hits) / 40, abs=1e-12)
