"""``FederatedConfig(save_total_limit=N)``: the N newest complete checkpoints stay, older complete ones go, and an
interrupted checkpoint neither counts nor costs a complete one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hf_trust.trainers.federated import (
    DirichletLabelPartitioner,
    FedAdam,
    FederatedConfig,
    FederatedTrainer,
    latest_checkpoint,
    verify_checkpoint,
)
from hf_trust.trainers.federated import checkpoint as ckpt_mod
from tests.federated.fed_fixtures import make_client_trainer, make_dataset


def _parts():
    return DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=5, seed=0).split(make_dataset(n=150))


def _trainer(out: Path, rounds: int = 5, limit=2, init_seed: int = 0) -> FederatedTrainer:
    cfg = FederatedConfig(rounds=rounds, seed=0, output_dir=str(out), save_total_limit=limit)
    return FederatedTrainer(make_client_trainer(seed=init_seed), FedAdam(server_lr=0.05), cfg)


def _folders(out: Path) -> list[str]:
    return sorted((p.name for p in out.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def test_save_total_limit_keeps_the_newest_complete_checkpoints(tmp_path):
    t = _trainer(tmp_path, rounds=5, limit=2)
    t.fit(_parts())
    assert _folders(tmp_path) == ["checkpoint-4", "checkpoint-5"]
    for name in _folders(tmp_path):
        assert verify_checkpoint(tmp_path / name)["round"] == int(name.split("-")[1])
    # None keeps every one (the default, as in transformers.Trainer)
    keep_all = tmp_path / "all"
    _trainer(keep_all, rounds=3, limit=None).fit(_parts())
    assert _folders(keep_all) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_config_refuses_a_limit_below_one():
    with pytest.raises(ValueError, match="save_total_limit"):
        FederatedConfig(save_total_limit=0)


def test_an_incomplete_checkpoint_neither_counts_nor_deletes_a_complete_one(tmp_path, monkeypatch):
    ref = _trainer(tmp_path / "ref", rounds=5, limit=None)
    ref.fit(_parts())
    out = tmp_path / "run"
    # the run dies while writing checkpoint-4's manifest: checkpoint-4 holds every file but is incomplete
    real = ckpt_mod.finish_checkpoint

    def dying(path, round_number, world, files):
        if Path(path).name == "checkpoint-4":
            raise OSError("simulated crash before the manifest")
        return real(path, round_number, world, files)

    monkeypatch.setattr(ckpt_mod, "finish_checkpoint", dying)
    monkeypatch.setattr("hf_trust.trainers.federated.trainer.finish_checkpoint", dying)
    with pytest.raises(OSError, match="simulated crash"):
        _trainer(out, rounds=5, limit=2).fit(_parts())
    monkeypatch.undo()
    # the two newest complete checkpoints are still there: the incomplete one did not push checkpoint-2 out
    assert _folders(out) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    assert latest_checkpoint(out) == out / "checkpoint-3"
    # a prune with the incomplete folder present keeps it and both complete ones
    ckpt_mod.prune_checkpoints(out, 2)
    assert _folders(out) == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    # resume from the latest complete one (other initial weights: all must come from the checkpoint)
    resumed = _trainer(out, rounds=5, limit=2, init_seed=99)
    resumed.fit(_parts(), resume_from=str(latest_checkpoint(out)))
    for name, p in ref.global_params.items():
        assert torch.equal(p, resumed.global_params[name]), name
    # checkpoint-4 was rewritten in full, and only the two newest complete checkpoints remain
    assert _folders(out) == ["checkpoint-4", "checkpoint-5"]
    assert latest_checkpoint(out) == out / "checkpoint-5"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(ref.history)
    assert np.isfinite([r["train_loss"] for r in resumed.history]).all()
