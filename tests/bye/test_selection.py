"""Selection rule (spec b4-b6): golden arrays vs scikit-learn, GMM parity, guards and safeguards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_trust.errors import HFTrustError
from hf_trust.filters import BYEReport, BYESelectConfig, bye_select, fit_gmm_1d, gaussian_kl


def _golden_matrix(seed: int = 0, n: int = 300, L: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Layer 2 collapses for poisoned rows; other layers are unimodal noise."""
    rng = np.random.default_rng(seed)
    poison = np.zeros(n, dtype=bool)
    poison[:30] = True
    E = rng.normal(2.3, 0.15, (n, L))
    E[poison, 2] = rng.normal(0.8, 0.1, poison.sum())
    return E, poison


def _sklearn_reference(E: np.ndarray):
    """The official selection logic, written against scikit-learn (what ``bye.py`` does)."""
    from sklearn.mixture import GaussianMixture

    sens = []
    for l in range(E.shape[1]):
        g = GaussianMixture(n_components=2, random_state=0).fit(E[:, l : l + 1])
        mu = g.means_.ravel()
        sd = np.sqrt(g.covariances_.ravel())
        if abs(mu[0] - mu[1]) > 2 * (sd[0] + sd[1]):
            sens.append(l)
    if not sens:
        return sens, None
    s = E[:, sens].mean(axis=1).reshape(-1, 1)
    g = GaussianMixture(n_components=2, random_state=0)
    lab = g.fit_predict(s)
    return sens, lab == int(np.argmin(g.means_.ravel()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_golden_against_sklearn(seed):
    pytest.importorskip("sklearn")
    E, poison = _golden_matrix(seed)
    sens_ref, mask_ref = _sklearn_reference(E)
    report, scores = bye_select(E)
    assert report.sensitive_layers == sens_ref == [2]
    np.testing.assert_array_equal(np.asarray(report.suspicious), mask_ref)
    assert report.detection(poison)["recall"] == 1.0
    np.testing.assert_allclose(scores, E[:, 2])


def test_gmm_parity_with_sklearn():
    sk = pytest.importorskip("sklearn.mixture")
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.7, 0.2, 60), rng.normal(2.4, 0.3, 540)])
    ours = fit_gmm_1d(x)
    g = sk.GaussianMixture(n_components=2, random_state=0).fit(x[:, None])
    order = np.argsort(g.means_.ravel())
    np.testing.assert_allclose(ours.means, g.means_.ravel()[order], atol=1e-4)
    np.testing.assert_allclose(ours.stds, np.sqrt(g.covariances_.ravel()[order]), atol=1e-4)
    np.testing.assert_allclose(ours.weights, g.weights_[order], atol=1e-4)


def test_kl_diagnostic_formula():
    assert gaussian_kl(0.0, 1.0, 0.0, 1.0) == pytest.approx(0.0)
    assert gaussian_kl(0.0, 1.0, 2.0, 1.0) == pytest.approx(2.0)  # Δμ²/2 for unit variances
    E, _ = _golden_matrix()
    report, _ = bye_select(E)
    assert int(np.argmax(report.layer_kl)) == 2


def test_unimodal_data_removes_nothing():
    E = np.random.default_rng(0).normal(2.0, 0.2, (200, 4))
    report, scores = bye_select(E)
    assert report.status == "no_sensitive_layers"
    assert report.sensitive_layers == [] and not any(report.suspicious) and report.removed_fraction == 0.0
    assert np.isnan(scores).all()


def test_nan_replaced_by_column_mean():
    E, poison = _golden_matrix()
    E[5, 0] = np.nan
    report, _ = bye_select(E)
    assert report.sensitive_layers == [2]


def test_empty_matrix_is_a_clear_error():
    with pytest.raises(HFTrustError, match="empty"):
        bye_select(np.zeros((0, 4)))


def test_direction_is_fixed():
    with pytest.raises(ValueError, match="low-entropy"):
        bye_select(np.ones((4, 2)), direction="high")


def test_top_kl_and_cap_and_minor_component():
    E, poison = _golden_matrix()
    E[:, 4] = np.random.default_rng(9).normal(2.3, 0.6, len(E))  # noisy, not bimodal
    rep, _ = bye_select(E, BYESelectConfig(layer_select="top_kl:1"))
    assert rep.sensitive_layers == [2]
    rep, _ = bye_select(E, BYESelectConfig(max_removal_fraction=0.05))
    assert rep.status == "capped" and rep.num_removed == math.floor(0.05 * len(E))
    assert rep.detection(poison)["precision"] == 1.0
    # a bimodal layer whose LOW component is the majority is dropped by require_minor_low_component
    E2 = E.copy()
    E2[:, 2] = np.where(np.arange(len(E)) < 250, 0.8, 2.3) + np.random.default_rng(1).normal(0, 0.05, len(E))
    assert bye_select(E2)[0].sensitive_layers == [2]
    assert bye_select(E2, BYESelectConfig(require_minor_low_component=True))[0].status == "no_sensitive_layers"


def test_removal_histogram_and_concentration_warning():
    E, poison = _golden_matrix()
    labels = np.where(poison, "target", np.where(np.arange(len(E)) % 2, "a", "b"))
    with pytest.warns(UserWarning, match="target"):
        rep, _ = bye_select(E, BYESelectConfig(warn_if_removal_concentrated=0.9), labels=labels)
    assert rep.removal_histogram == {"target": 30}
    assert rep.label_histogram["a"] + rep.label_histogram["b"] == 270


def test_report_roundtrip_and_plot(tmp_path):
    E, poison = _golden_matrix()
    rep, scores = bye_select(E, is_poison=poison)
    assert rep.layer_auroc[2] == pytest.approx(1.0)
    rep.save(tmp_path / "r.json")
    back = BYEReport.load(tmp_path / "r.json")
    assert back.suspicious == rep.suspicious and back.sensitive_layers == [2]
    assert rep.plot(tmp_path / "r.png", scores=scores).stat().st_size > 1000
