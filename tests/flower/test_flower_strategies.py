"""Flower's strategies, unchanged, on our clients: each result is recomputed independently from the recorded
client replies (FedMedian, Krum, FedTrimmedAvg, FedAdam, DP clipping server- and client-side, DP noise)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from tests.flower.flower_fixtures import NUM_CLIENTS, ROUNDS  # noqa: E402


def _global_after(fed, r):
    """Global arrays after round r (1-based)."""
    if r < ROUNDS:
        return fed.round_arrays[r + 1]["global"]
    return {k: v.numpy() for k, v in fed.global_params.items()}


def _weights(fed, r, clients):
    recs = {rec["client"]: rec for rec in fed.history[r - 1]["client_records"]}
    return np.array([recs[k]["num_examples"] for k in clients], dtype=np.float64)


def _check_each_round(fed, expected_fn, tol):
    assert fed.error is None, fed.error
    assert sorted(fed.round_arrays) == list(range(1, ROUNDS + 1))
    for r in range(1, ROUNDS + 1):
        clients = fed.round_arrays[r]["clients"]
        assert sorted(clients) == list(range(NUM_CLIENTS))
        expected = expected_fn(fed, r)
        got = _global_after(fed, r)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=tol, err_msg=f"round {r}, {k}")


def test_fedmedian_is_the_coordinate_wise_median_of_the_client_models(simulated):
    def median(fed, r):
        clients = fed.round_arrays[r]["clients"]
        out = {}
        for k in fed.round_arrays[r]["global"]:
            s = np.sort(np.stack([clients[c][k].astype(np.float64) for c in sorted(clients)]), axis=0)
            out[k] = (s[NUM_CLIENTS // 2 - 1] + s[NUM_CLIENTS // 2]) / 2  # even count: mean of the middle two
        return out

    _check_each_round(simulated["fedmedian"], median, 1e-7)
    # not FedAvg in disguise
    fedavg = simulated["fedavg"].global_params
    assert max(float(np.abs(simulated["fedmedian"].global_params[k] - fedavg[k]).max()) for k in fedavg) > 1e-4


def test_krum_picks_the_client_with_the_smallest_score(simulated):
    fed = simulated["krum"]
    assert fed.error is None
    f = 1
    for r in range(1, ROUNDS + 1):
        clients = fed.round_arrays[r]["clients"]
        ids = sorted(clients)
        got = _global_after(fed, r)
        # the new global model is exactly one client's model ...
        same = [c for c in ids if all(np.array_equal(got[k], clients[c][k]) for k in got)]
        assert len(same) == 1, f"round {r}: Krum's result is not one client's model"
        chosen = same[0]
        # ... the one with the smallest Krum score: sum of squared distances to its n - f - 2 nearest neighbours
        m = max(1, len(ids) - f - 2)

        def scores(dtype, clients=clients, ids=ids, m=m):
            flat = np.stack([np.concatenate([clients[c][k].ravel() for k in clients[c]]).astype(dtype) for c in ids])
            sq = (flat**2).sum(1)
            d = sq[:, None] + sq[None, :] - 2 * flat @ flat.T  # Flower's formula, in the arrays' own dtype
            return np.array([np.sort(np.delete(d[i], i))[:m].sum() for i in range(len(ids))])

        s32 = scores(np.float32)
        # with n - f - 2 = 1 the two mutual nearest neighbours tie; replies reach the strategy in partition order,
        # so Flower's argsort takes the lower client id of a tie, in every run
        ties = [c for i, c in enumerate(ids) if s32[i] <= s32.min()]
        assert chosen == min(ties), (r, chosen, s32)
        exact = scores(np.float64)
        assert exact[ids.index(chosen)] <= exact.min() * (1 + 1e-5)


def test_fedtrimmedavg_is_the_trimmed_mean(simulated):
    from scipy.stats import trim_mean

    def trimmed(fed, r):
        clients = fed.round_arrays[r]["clients"]
        return {
            k: trim_mean(np.stack([clients[c][k].astype(np.float64) for c in sorted(clients)]), 0.25, axis=0)
            for k in fed.round_arrays[r]["global"]
        }

    _check_each_round(simulated["trimmed"], trimmed, 1e-7)


def test_fedadam_takes_flowers_adam_step_on_the_mean_update(simulated):
    fed = simulated["fedadam"]
    eta, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    m = v = None
    for r in range(1, ROUNDS + 1):
        rec = fed.round_arrays[r]
        ids = sorted(rec["clients"])
        w = _weights(fed, r, ids)
        x0 = rec["global"]
        mean = {k: sum(w[i] * rec["clients"][c][k].astype(np.float64) for i, c in enumerate(ids)) / w.sum() for k in x0}
        delta = {k: mean[k] - x0[k] for k in x0}
        m = {k: (b1 * (m[k] if m else 0) + (1 - b1) * delta[k]) for k in x0}
        v = {k: (b2 * (v[k] if v else 0) + (1 - b2) * delta[k] ** 2) for k in x0}
        eta_norm = eta * np.sqrt(1 - b2 ** (r + 1)) / (1 - b1 ** (r + 1))
        expected = {k: x0[k] + eta_norm * m[k] / (np.sqrt(v[k]) + tau) for k in x0}
        got = _global_after(fed, r)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=1e-6, err_msg=f"round {r}, {k}")


def _clipped_mean(fed, r, clip):
    rec = fed.round_arrays[r]
    ids = sorted(rec["clients"])
    w = _weights(fed, r, ids)
    x0 = {k: v.astype(np.float64) for k, v in rec["global"].items()}
    total = {k: np.zeros_like(v) for k, v in x0.items()}
    norms = []
    for i, c in enumerate(ids):
        upd = {k: rec["clients"][c][k].astype(np.float64) - x0[k] for k in x0}
        norm = np.sqrt(sum((u**2).sum() for u in upd.values()))
        norms.append(norm)
        scale = min(1.0, clip / norm)
        for k in x0:
            total[k] += w[i] * upd[k] * scale
    return {k: x0[k] + total[k] / w.sum() for k in x0}, norms


@pytest.mark.parametrize("name", ["dp_clip", "dp_client"])
def test_dp_fixed_clipping_without_noise_is_the_mean_of_clipped_updates(simulated, name):
    fed = simulated[name]
    # the client-side variant clips in Flower's fixedclipping_mod on the client: the recorded replies are already
    # clipped, so recomputing the clip on them is the identity and the check still holds
    _check_each_round(fed, lambda f, r: _clipped_mean(f, r, 0.05)[0], 1e-6)
    if name == "dp_clip":
        assert max(_clipped_mean(fed, 1, 0.05)[1]) > 0.05  # the clip was active
    else:
        assert max(_clipped_mean(fed, 1, 0.05)[1]) <= 0.05 + 1e-6  # clipped before it left the client


def test_dp_noise_has_the_configured_standard_deviation(simulated):
    fed = simulated["dp_noise"]
    assert fed.error is None
    expected_std = 1.0 * 0.05 / NUM_CLIENTS  # Flower: noise_multiplier · clipping_norm / sampled clients
    residuals = []
    for r in range(1, ROUNDS + 1):
        clean, _ = _clipped_mean(fed, r, 0.05)
        got = _global_after(fed, r)
        residuals.append(np.concatenate([(got[k] - clean[k]).ravel() for k in clean]))
    res = np.concatenate(residuals)
    assert abs(res.std() / expected_std - 1) < 0.15, (res.std(), expected_std)
    assert abs(res.mean()) < 4 * expected_std / np.sqrt(res.size)
