"""Client failures and timeouts follow Flower's semantics (error replies and late replies are left out of the
aggregate, the round goes on) and are recorded in the history."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")


def test_failures_and_timeouts_are_recorded_and_left_out(simulated):
    fed = simulated["failures"]
    assert fed.error is None
    r1, r2, r3 = fed.history
    # round 1: client 2 answered after the ServerApp's round timeout (FAILURES_ROUND_TIMEOUT)
    assert r1["timed_out_clients"] == [2] and r1["failed_clients"] == [] and r1["aggregated"]
    assert sorted(fed.round_arrays[1]["clients"]) == [0, 1, 3]
    # round 2: client 1 raised; Flower turns that into an error reply
    assert r2["failed_clients"] == [1] and r2["timed_out_clients"] == []
    assert "boom: client 1 lost its data" in r2["errors"]["1"]
    assert len(r2["errors"]["1"]) < 400  # the client's message, not the engine's traceback
    # round 3: client 3 ran past FederatedConfig.client_timeout inside its training (ClientTimeout)
    assert r3["failed_clients"] == [3]
    assert "ran past its time limit" in r3["errors"]["3"]
    for row, failed in zip(fed.history, ([2], [1], [3])):
        assert {c["client"] for c in row["client_records"] if "failed" not in c} == {0, 1, 2, 3} - set(failed)
        assert row["payload_bytes_up"] < row["payload_bytes_down"]  # one reply fewer than messages sent
    # the aggregate of round 2 is FedAvg over the three clients that answered
    rec = fed.round_arrays[2]
    ids = sorted(rec["clients"])
    assert ids == [0, 2, 3]
    recs = {c["client"]: c for c in r2["client_records"]}
    w = np.array([recs[c]["num_examples"] for c in ids], dtype=np.float64)
    for k, after in fed.round_arrays[3]["global"].items():
        mean = sum(w[i] * rec["clients"][c][k].astype(np.float64) for i, c in enumerate(ids)) / w.sum()
        np.testing.assert_allclose(after, mean, rtol=0, atol=1e-6)


def test_a_non_finite_update_is_rejected_like_a_failed_client(simulated):
    fed = simulated["nonfinite"]
    assert fed.error is None
    r1, r2 = fed.history
    assert r1["failed_clients"] == [2] and r1["aggregated"]
    assert r1["errors"]["2"].startswith("NonFiniteUpdate: non-finite values in ['0.weight']")
    assert sorted(fed.round_arrays[1]["clients"]) == [0, 1, 3]  # what the strategy aggregated
    assert r2["failed_clients"] == []
    assert all(np.isfinite(v.numpy()).all() for v in fed.global_params.values())
