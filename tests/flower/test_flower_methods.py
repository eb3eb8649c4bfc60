"""GGEUR and federated prompt learning on Flower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from hf_trust.trainers.federated import FedAvg as CoreFedAvg  # noqa: E402
from hf_trust.trainers.federated import FederatedConfig  # noqa: E402
from tests.flower.flower_fixtures import fpl_setup, ggeur_setup, max_abs_diff  # noqa: E402


@pytest.fixture(scope="module")
def ggeur_in_process():
    from hf_trust.trainers.ggeur import GGEURTrainer

    train, test, parts, config = ggeur_setup()
    t = GGEURTrainer(config, CoreFedAvg(), FederatedConfig(rounds=2, seed=0), eval_datasets={"test": test})
    t.fit(parts)
    return t, train, parts


def test_ggeur_statistics_round_carries_per_class_statistics_only(simulated, ggeur_in_process):
    from hf_trust.trainers.federated.flower.ggeur import COUNTS_KEY, STATS_KEY

    fed = simulated["ggeur"]
    assert fed.error is None, fed.error
    _, train, parts = ggeur_in_process
    emb = np.asarray(train["embedding"], dtype=np.float64)
    labels = np.asarray(train["label"])
    d = emb.shape[1]
    assert len(fed.statistics_wire) == parts.num_clients
    for k, content in enumerate(fed.statistics_wire):
        assert set(content.keys()) == {STATS_KEY, COUNTS_KEY, "hf-trust-client"}
        assert not content.metric_records.keys() - {COUNTS_KEY}
        held = np.unique(labels[parts.indices[k]])
        counts = content[COUNTS_KEY]
        assert sorted(counts) == sorted(f"class-{c}" for c in held)
        assert [counts[f"class-{c}"] for c in held] == [int((labels[parts.indices[k]] == c).sum()) for c in held]
        arrays = content[STATS_KEY]
        assert sorted(arrays) == sorted(f"class-{c}/{p}" for c in held for p in ("first", "second"))
        for key, arr in arrays.items():
            assert arr.dtype == "float64"
            assert tuple(arr.shape) == ((d,) if key.endswith("first") else (d, d))
        # what travels is Σz and Σzzᵀ: no embedding row of a class with ≥ 2 rows is in any array on the wire
        wire = b"".join(a.data for a in arrays.values())
        for c in held:
            rows = emb[parts.indices[k]][labels[parts.indices[k]] == c]
            if len(rows) >= 2:
                assert not any(row.tobytes() in wire for row in rows)
        # about C·(d + d²) float64 values and the .npy headers
        assert len(wire) <= len(held) * (d + d * d) * 8 + 2 * len(held) * 256
    assert fed.protocol_history[0]["phase"] == "statistics"


def test_ggeur_pooled_covariance_and_head_equal_the_in_process_run(simulated, ggeur_in_process):
    fed = simulated["ggeur"]
    t, _, _ = ggeur_in_process
    assert fed.error is None, fed.error
    assert torch.allclose(fed.pooled_cov, t.pooled_cov, rtol=0, atol=1e-10)
    assert float((fed.pooled_cov - t.pooled_cov).abs().max()) <= 1e-10
    assert sorted(fed.shapes) == sorted(t.shapes)
    for c in t.shapes:
        np.testing.assert_allclose(fed.shapes[c].eigenvalues, t.shapes[c].eigenvalues, rtol=0, atol=1e-12)
    # the clients augmented exactly as in-process (same row counts) and the head trained to the same weights
    aug = fed.protocol_history[1]["augmented_rows"]
    _, _, parts = ggeur_in_process
    assert all(aug[k] > len(parts.indices[k]) for k in range(parts.num_clients))
    head_ref = {k: v.detach() for k, v in t.head.named_parameters()}
    assert max_abs_diff(fed.global_params, head_ref) <= 1e-5
    assert fed.history[-1]["eval_test_accuracy"] == pytest.approx(
        t.federation.history[-1]["eval_test_accuracy"], abs=1e-9
    )


def test_fpl_only_prompt_parameters_travel_and_match_in_process(simulated):
    fed = simulated["fpl"]
    assert fed.error is None, fed.error
    tr, parts, _ = fpl_setup()
    prompt_names = {n for n, p in tr.model.named_parameters() if p.requires_grad}
    assert prompt_names and all(n.startswith("prompts.") for n in prompt_names)
    backbone = {n for n, _ in tr.model.named_parameters()} - prompt_names
    assert backbone  # the frozen CLIP is there, and it never travels
    numel = tr.model.payload_numel()
    for rec in fed.round_arrays.values():
        assert set(rec["global"]) == prompt_names
        for arrays in rec["clients"].values():
            assert set(arrays) == prompt_names
            assert sum(a.size for a in arrays.values()) == numel
    # float32 prompts, one ArrayRecord of them per client and round (plus the .npy headers)
    assert fed.history[0]["payload_bytes_up"] < parts.num_clients * (numel * 4 + 256 * len(prompt_names))
    # the same federation in-process (VPTPR on, diagnostics on) gives the same prompts
    tr.fit(parts)
    assert max_abs_diff(fed.global_params, tr.global_params) <= 1e-5
    assert [round(r["update_cos_vpt"], 4) for r in fed.history] == [
        round(d["vision"]["mean_cos_to_global"], 4) for d in tr.diagnostics
    ]
