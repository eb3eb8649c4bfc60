"""GGEUR's statistics, geometry and augmentation rules (spec e.1-e.4)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustKeyError, HFTrustTypeError
from hf_trust.trainers.ggeur.augment import augment_multi_domain, augment_single_domain, default_per_sample
from hf_trust.trainers.ggeur.geometry import GeometricShape, isotropic_shape
from hf_trust.trainers.ggeur.statistics import (
    ClassStatistics,
    aggregate,
    aggregate_class,
    check_statistics_only,
    client_statistics,
    guide_set,
)


def _random_clients(rng, k=5, d=8, classes=4):
    data = []
    for _cid in range(k):
        n = int(rng.integers(3, 40))
        z = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d) * 4
        y = rng.integers(0, classes, size=n)
        data.append((z, y))
    return data


@pytest.mark.parametrize("form", ["moments", "mean_cov"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_covariance_is_exact(form, seed):
    rng = np.random.default_rng(seed)
    data = _random_clients(rng)
    payloads = [client_statistics(z, y, client_id=i, form=form) for i, (z, y) in enumerate(data)]
    pooled = aggregate(payloads, guide_threshold=None)
    allz = np.concatenate([z for z, _ in data])
    ally = np.concatenate([y for _, y in data])
    for c, p in pooled.items():
        zc = allz[ally == c]
        assert p.n == len(zc)
        np.testing.assert_allclose(p.mean, zc.mean(0), atol=1e-10, rtol=0)
        assert np.abs(p.cov - np.cov(zc, rowvar=False, bias=True)).max() < 1e-10


def test_guide_set_takes_shortest_prefix_reaching_threshold():
    counts = {0: 5, 1: 50, 2: 30, 3: 15}
    assert guide_set(counts, 0.8) == [1, 2]  # 50 + 30 = 80 >= 0.8 * 100
    assert guide_set(counts, 0.5) == [1]
    assert guide_set(counts, None) == [0, 1, 2, 3]
    with pytest.raises(HFTrustConfigError, match="guide_threshold"):
        guide_set(counts, 0.0)


def test_guide_set_aggregation_uses_only_guide_clients():
    rng = np.random.default_rng(3)
    za, zb, zc = rng.normal(size=(60, 4)), rng.normal(size=(30, 4)) + 5, rng.normal(size=(10, 4)) - 5
    payloads = [client_statistics(z, np.zeros(len(z), int), client_id=i) for i, z in enumerate((za, zb, zc))]
    pooled = aggregate(payloads, guide_threshold=0.8)[0]
    expect = np.concatenate([za, zb])
    assert np.abs(pooled.cov - np.cov(expect, rowvar=False, bias=True)).max() < 1e-10


def test_payload_holds_statistics_only():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(20, 6)), rng.integers(0, 3, 20)
    payload = client_statistics(z, y)
    size = check_statistics_only(payload)
    assert size < 20 * 6 * 8 * 3 + 4000  # per-class d + d×d floats, not rows
    payload.classes[0] = ClassStatistics(5, z[:5], np.eye(6))  # rows smuggled in as "first"
    with pytest.raises(HFTrustDataError, match="may not carry embedding rows"):
        check_statistics_only(payload)
    payload = client_statistics(z, y)
    payload.extra = z  # rows attached beside the statistics
    with pytest.raises(HFTrustDataError, match="not a statistic; send only what client_statistics builds"):
        check_statistics_only(payload)


def test_sample_covariance_approaches_sigma():
    rng = np.random.default_rng(0)
    d, m = 64, 20000
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.exp(-np.arange(d) / 8.0)
    sigma = (q * lam) @ q.T
    shape = GeometricShape.from_covariance(sigma)
    draws = shape.sample(np.zeros((1, d)), rng, per_center=m)
    emp = np.cov(draws, rowvar=False, bias=True)
    assert np.linalg.norm(emp - sigma) / np.linalg.norm(sigma) < 0.05
    lin = shape.sample(np.zeros((1, d)), rng, scale="linear", per_center=m)
    top = np.sort(np.linalg.eigvalsh(np.cov(lin, rowvar=False)))[::-1][:3]
    np.testing.assert_allclose(top, np.sort(lam)[::-1][:3] ** 2, rtol=0.06)


def test_boost_targets_the_named_end_of_the_spectrum():
    cov = np.diag(np.arange(1.0, 21.0))
    small = GeometricShape.from_covariance(cov, boost_which="smallest", boost_k=10, boost_max=5)
    large = GeometricShape.from_covariance(cov, boost_which="largest", boost_k=10, boost_max=5)
    assert small.eigenvalues[0] == pytest.approx(5.0) and small.eigenvalues[-1] == pytest.approx(20.0)
    assert large.eigenvalues[-1] == pytest.approx(100.0) and large.eigenvalues[0] == pytest.approx(1.0)
    neg = GeometricShape.from_covariance(np.diag([-1e-9, 1.0]))
    assert neg.eigenvalues.min() == 0.0


def test_single_domain_counts_follow_the_cap_and_keep_real_rows():
    rng = np.random.default_rng(0)
    d = 5
    z = rng.normal(size=(23, d))
    y = np.array([0] * 15 + [2] * 8)
    shapes = {c: isotropic_shape(d, 1.0) for c in range(3)}
    out = augment_single_domain(z, y, shapes, target_per_class={0: 20, 1: 20, 2: 50}, rng=rng)
    assert out.counts() == {0: 20, 2: 50}  # class 1 absent stays absent
    np.testing.assert_array_equal(out.embeddings[:23], z)
    assert out.synthetic.sum() == 20 + 50 - 23
    # class 0: n=15 >= need=5 -> 5 distinct real centres; class 2: n=8 < need=42 -> pool of 8*per
    assert default_per_sample(8, 10) == 5000 and default_per_sample(12, 100) == 50
    none = augment_single_domain(z, y, shapes, target_per_class=5, rng=rng)
    assert none.counts() == {0: 15, 2: 8} and not none.synthetic.any()


def test_multi_domain_prototypes_bring_absent_classes():
    rng = np.random.default_rng(0)
    d = 4
    z = rng.normal(size=(10, d))
    y = np.zeros(10, int)
    shapes = {0: isotropic_shape(d, 0.1), 1: isotropic_shape(d, 0.1)}
    protos = {1: [np.full(d, 7.0), np.full(d, -7.0)]}
    out = augment_multi_domain(
        z, y, shapes, protos, rng, num_per_sample=3, step1_keep=20, prototype_draws=30, target_per_class=40
    )
    assert out.counts() == {0: 30, 1: 40}  # class 0: 10 real + all 20 kept step-1 draws; class 1 only from prototypes
    c1 = out.embeddings[out.labels == 1]
    assert (np.abs(np.abs(c1).mean(1) - 7) < 1.5).all()
    off = augment_multi_domain(z, y, shapes, protos, rng, prototype_draws=40, target_per_class=40, official=True)
    # official quirk: the first draws only, i.e. the first other domain's prototype
    assert (off.embeddings[off.labels == 1].mean(1) > 0).all()


def test_client_statistics_rejects_bad_shapes():
    with pytest.raises(HFTrustDataError, match="2-D"):
        client_statistics(np.zeros(5), [0] * 5)
    with pytest.raises(HFTrustDataError, match="must match"):
        client_statistics(np.zeros((5, 2)), [0] * 4)


def test_core_refusals_are_hf_trust_errors_that_name_the_fix():
    """Every refusal of the statistics / geometry / augmentation core is an hf-trust error (which also derives
    from the builtin it replaces) and says what to do."""
    z, y = np.random.default_rng(0).normal(size=(6, 3)), np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(HFTrustConfigError, match="form must be"):
        client_statistics(z, y, form="rows")
    with pytest.raises(HFTrustDataError, match="pass at least one ClassStatistics"):
        aggregate_class([])
    with pytest.raises(HFTrustTypeError, match="build it with client_statistics"):
        check_statistics_only({"classes": {}})
    with pytest.raises(HFTrustDataError, match="square"):
        GeometricShape.from_covariance(np.zeros((2, 3)))
    with pytest.raises(HFTrustConfigError, match="boost_which"):
        GeometricShape.from_covariance(np.eye(3), boost_which="middle")
    shape = isotropic_shape(3, 1.0)
    with pytest.raises(HFTrustDataError, match="same encoder"):
        shape.sample(np.zeros((2, 4)), np.random.default_rng(0))
    with pytest.raises(HFTrustConfigError, match="scale must"):
        shape.sample(np.zeros((2, 3)), np.random.default_rng(0), scale="cube")
    # class 1 is held but has no global shape: a KeyError (as before) naming the classes the server covered
    with pytest.raises(HFTrustKeyError, match=r"no global shape for class 1.*shapes has \[0\]"):
        augment_single_domain(z, y, {0: shape}, target_per_class=10, rng=np.random.default_rng(0))
    assert issubclass(HFTrustKeyError, KeyError)


def test_axis_aligned_shapes_draw_exactly_what_the_full_transform_draws():
    """The oversampling / isotropic controls skip the d×d matmul; the draws must not change by a bit."""
    from hf_trust.trainers.ggeur.geometry import isotropic_shape

    centers = np.random.default_rng(1).normal(size=(5, 32))
    for trace in (0.0, 3.7):
        shape = isotropic_shape(32, trace)
        fast = shape.sample(centers, np.random.default_rng(0), per_center=3, scale="sqrt")
        eps = np.random.default_rng(0).standard_normal((15, 32))
        full = np.repeat(centers, 3, axis=0) + eps @ shape.transform("sqrt")
        assert np.array_equal(fast, full)
