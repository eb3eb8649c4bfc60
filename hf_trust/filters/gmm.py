"""A 1-D, 2-component Gaussian mixture fitted by EM (numpy only).

It mirrors what the reference calls, ``sklearn.mixture.GaussianMixture(n_components=2, random_state=0)``
with its defaults (full covariance, k-means initialisation, ``n_init=1``, ``tol=1e-3``, ``reg_covar=1e-6``,
``max_iter=100``), so that the selection rule behaves the same without adding scikit-learn as a dependency.
The k-means initialisation is solved exactly: in one dimension the optimal 2-means split is a threshold on
the sorted values, so no random restarts are needed (sklearn's k-means++ reaches the same split on the
bimodal data that matters; ``tests/bye/test_gmm.py`` checks parity when sklearn is installed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hf_trust.errors import HFTrustDataError


@dataclass
class GMM1D:
    """Fitted parameters.  Components are sorted by mean, so index 0 is always the *low* component."""

    weights: np.ndarray  # (2,)
    means: np.ndarray  # (2,)
    variances: np.ndarray  # (2,)
    converged: bool
    n_iter: int

    @property
    def stds(self) -> np.ndarray:
        return np.sqrt(self.variances)

    def log_resp(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        log_p = -0.5 * (np.log(2 * np.pi * self.variances) + (x - self.means) ** 2 / self.variances) + np.log(
            self.weights
        )
        return log_p - _logsumexp(log_p)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Maximum-posterior component (0 = low mean, 1 = high mean)."""
        return np.argmax(self.log_resp(x), axis=1)

    def to_dict(self) -> dict:
        return {
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "converged": bool(self.converged),
            "n_iter": int(self.n_iter),
        }


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(axis=1, keepdims=True))


def _two_means_split(x: np.ndarray) -> np.ndarray:
    """Labels of the optimal 2-means partition of 1-D data (a threshold between sorted values)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    n = len(xs)
    csum, csq = np.cumsum(xs), np.cumsum(xs**2)
    k = np.arange(1, n)  # left part holds k points
    left = csq[:-1] - csum[:-1] ** 2 / k
    right = (csq[-1] - csq[:-1]) - (csum[-1] - csum[:-1]) ** 2 / (n - k)
    cut = int(np.argmin(left + right)) + 1
    labels = np.empty(n, dtype=int)
    labels[order[:cut]] = 0
    labels[order[cut:]] = 1
    return labels


def _m_step(x: np.ndarray, resp: np.ndarray, reg_covar: float):
    nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
    means = (resp * x[:, None]).sum(axis=0) / nk
    variances = (resp * (x[:, None] - means) ** 2).sum(axis=0) / nk + reg_covar
    return nk / len(x), means, variances


def fit_gmm_1d(x: np.ndarray, tol: float = 1e-3, reg_covar: float = 1e-6, max_iter: int = 100) -> GMM1D:
    """Fit a 2-component 1-D GMM by EM with a (exact) k-means start; sklearn's defaults and stopping rule."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 2:
        raise HFTrustDataError(f"a 2-component mixture needs at least 2 values, got {x.size}.")
    if np.ptp(x) == 0:
        # Degenerate: one point mass; report two identical components so that no rule can call it bimodal.
        v = np.full(2, reg_covar)
        return GMM1D(np.array([0.5, 0.5]), np.full(2, x[0]), v, True, 0)
    resp = np.zeros((x.size, 2))
    resp[np.arange(x.size), _two_means_split(x)] = 1.0
    weights, means, variances = _m_step(x, resp, reg_covar)
    lower = -np.inf
    converged, it = False, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned after the loop
        log_p = -0.5 * (np.log(2 * np.pi * variances) + (x[:, None] - means) ** 2 / variances) + np.log(weights)
        norm = _logsumexp(log_p)
        resp = np.exp(log_p - norm)
        weights, means, variances = _m_step(x, resp, reg_covar)
        new_lower = float(norm.mean())
        if abs(new_lower - lower) < tol:
            converged = True
            break
        lower = new_lower
    order = np.argsort(means)
    return GMM1D(weights[order], means[order], variances[order], converged, it)


def gaussian_kl(mu_low: float, sd_low: float, mu_high: float, sd_high: float) -> float:
    """KL(N_low ‖ N_high): the reference's per-layer plot diagnostic (not used for selection by default)."""
    return float(np.log(sd_high / sd_low) + (sd_low**2 + (mu_low - mu_high) ** 2) / (2 * sd_high**2) - 0.5)
