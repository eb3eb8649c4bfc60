"""A Flower run resumes from its last complete checkpoint, strategy state included, bit-identical to an
uninterrupted run (as the in-process engine's fault-injection test), and keeps ``save_total_limit`` checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("flwr")

from hf_trust.trainers.federated import latest_checkpoint, verify_checkpoint  # noqa: E402
from tests.flower.flower_fixtures import RESUME_DIR, ROUNDS  # noqa: E402


@pytest.mark.parametrize("name", ["core_fedadam", "flwr_fedadam"])
def test_flower_resume_is_bit_identical_with_the_strategy_state(simulated, name):
    full, resumed = simulated[f"{name}_full"], simulated[f"{name}_resumed"]
    assert full.error is None and resumed.error is None, (full.error, resumed.error)
    # FedAdam's moments matter: the resumed run would differ without them (it restarted at the last round)
    for k, p in full.global_params.items():
        assert torch.equal(p, resumed.global_params[k]), k
    assert max(float((p - resumed.initial_params[k]).abs().max()) for k, p in full.global_params.items()) > 1e-2

    def strip(rows):  # wall-clock columns left out
        out = []
        for r in rows:
            row = {k: v for k, v in r.items() if k not in ("seconds", "client_records", "train_metrics")}
            row["train_metrics"] = {k: v for k, v in r["train_metrics"].items() if k != "client-seconds"}
            out.append(row)
        return out

    assert [r["round"] for r in resumed.history] == list(range(1, ROUNDS + 1))
    assert strip(resumed.history) == strip(full.history)
    out = RESUME_DIR / f"{name}_full"
    # save_total_limit=2: the two newest complete checkpoints, each with the strategy state
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{ROUNDS - 1}", f"checkpoint-{ROUNDS}"]
    assert latest_checkpoint(out) == out / f"checkpoint-{ROUNDS}"
    assert verify_checkpoint(out / f"checkpoint-{ROUNDS}")["round"] == ROUNDS
    state = torch.load(out / f"checkpoint-{ROUNDS}" / "server.pt", weights_only=False)
    assert state["strategy"], "the strategy's state is saved"
    assert len(json.loads((RESUME_DIR / f"{name}_resumed" / "history.json").read_text())) == ROUNDS
