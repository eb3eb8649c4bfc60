"""Global geometric shapes and sampling along them (spec b.4-b.5, b.7 eigenvalue boost).

The shape of class i is the eigen-decomposition of its pooled covariance, Σᵢ = Σₘ λₘ ξₘ ξₘᵀ.  A new
embedding around a centre z is ``z + Σₘ εₘ s(λₘ) ξₘ`` with εₘ ~ N(0, 1), where ``s = sqrt`` reproduces
the released code (a Gaussian with covariance Σᵢ) and ``s = identity`` the equation as quoted from the
paper (``scale="linear"``; the covariance of the draws is then Σₘ λₘ² ξₘ ξₘᵀ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from hf_trust.errors import HFTrustConfigError, HFTrustDataError

Scale = Literal["sqrt", "linear"]
BoostWhich = Literal["smallest", "largest", "none"]


@dataclass
class GeometricShape:
    """Eigenvalues (ascending, clipped at 0) and eigenvectors (columns) of one class's covariance."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    _transforms: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_covariance(
        cls,
        cov: np.ndarray,
        boost_which: BoostWhich = "none",
        boost_k: int = 10,
        boost_max: float = 5.0,
    ) -> GeometricShape:
        """``eigh`` of the covariance, negative eigenvalues clipped to 0, optional boost.

        The boost multiplies ``boost_k`` eigenvalues by ``linspace(boost_max, 1, boost_k)``.  The official
        multi-domain code applies it to ``eigenvalues[:10]`` of ``eigh``'s ascending output, i.e. the
        *smallest* directions (``boost_which="smallest"``), although its comment says the first (largest)
        ones were meant (``"largest"``: the largest eigenvalue gets ``boost_max``).
        """
        cov = np.asarray(cov, dtype=np.float64)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise HFTrustDataError(f"covariance must be a square (d, d) matrix, got shape {cov.shape}.")
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
        # Negative eigenvalues are round-off (the code clips them to 0); so are positive ones many orders
        # below the largest, which would otherwise put noise into directions the data never varies in.
        vals = np.where(vals > vals.max(initial=0.0) * 1e-12, vals, 0.0)
        # eigh's sign of each eigenvector is arbitrary and flips under round-off; fix it (largest entry
        # positive) so that the same seed gives the same draws whatever produced the covariance.
        pivot = np.abs(vecs).argmax(0)
        vecs = vecs * np.sign(vecs[pivot, np.arange(vecs.shape[1])])
        if boost_which != "none":
            k = min(boost_k, len(vals))
            factors = np.linspace(boost_max, 1.0, k)
            if boost_which == "smallest":
                vals[:k] *= factors
            elif boost_which == "largest":
                vals[len(vals) - k :] *= factors[::-1]
            else:
                raise HFTrustConfigError(f"boost_which must be 'smallest', 'largest' or 'none', got {boost_which!r}.")
        return cls(vals, vecs)

    @property
    def dim(self) -> int:
        return len(self.eigenvalues)

    def sample(
        self,
        centers: np.ndarray,
        rng: np.random.Generator,
        scale: Scale = "sqrt",
        per_center: int = 1,
    ) -> np.ndarray:
        """``per_center`` draws around each row of ``centers`` → array ``(len(centers) * per_center, d)``.

        Rows come out grouped by centre: draws ``j*per_center … (j+1)*per_center-1`` belong to centre ``j``.
        """
        centers = np.atleast_2d(np.asarray(centers, dtype=np.float64))
        if centers.shape[1] != self.dim:
            raise HFTrustDataError(
                f"centres have dim {centers.shape[1]}, the shape has dim {self.dim}; embed them with the same encoder."
            )
        # Σₘ εₘ s(λₘ) ξₘ with ε ~ N(0, I) has the same law as ε' V diag(s(λ)) Vᵀ (ε' = ε Vᵀ is again
        # N(0, I)).  The symmetric form is unique, unlike the eigenvectors of (near-)repeated eigenvalues,
        # so the same seed gives the same draws on every process whatever round-off the pooling had.
        eps = rng.standard_normal((len(centers) * per_center, self.dim))
        if self._is_axis_aligned():
            # Identity eigenvectors (the oversampling and isotropic controls): the transform is diagonal, so
            # ε·diag(s) is the same product without a d×d matmul per draw (exact: the skipped terms are zeros).
            return np.repeat(centers, per_center, axis=0) + eps * self._spread(scale)
        return np.repeat(centers, per_center, axis=0) + eps @ self.transform(scale)

    def _is_axis_aligned(self) -> bool:
        if "axis_aligned" not in self._transforms:
            self._transforms["axis_aligned"] = bool(np.array_equal(self.eigenvectors, np.eye(self.dim)))
        return self._transforms["axis_aligned"]

    def _spread(self, scale: Scale) -> np.ndarray:
        if scale == "sqrt":
            return np.sqrt(self.eigenvalues)
        if scale == "linear":
            return self.eigenvalues
        raise HFTrustConfigError(f"scale must be 'sqrt' or 'linear', got {scale!r}.")

    def transform(self, scale: Scale = "sqrt") -> np.ndarray:
        """``V diag(s(λ)) Vᵀ`` (computed once per scale)."""
        if scale not in self._transforms:
            spread = self._spread(scale)
            self._transforms[scale] = (self.eigenvectors * spread) @ self.eigenvectors.T
        return self._transforms[scale]


def shapes_from_pooled(
    pooled: dict,
    boost_which: BoostWhich = "none",
    boost_k: int = 10,
    boost_max: float = 5.0,
) -> dict[int, GeometricShape]:
    """One :class:`GeometricShape` per pooled class (``pooled`` maps class → object with ``.cov``)."""
    return {
        c: GeometricShape.from_covariance(p.cov, boost_which=boost_which, boost_k=boost_k, boost_max=boost_max)
        for c, p in sorted(pooled.items())
    }


def isotropic_shape(dim: int, trace: float) -> GeometricShape:
    """A scaled identity with the given trace: the "isotropic noise" ablation (spec e.5)."""
    return GeometricShape(np.full(dim, trace / dim), np.eye(dim))


def optional_rng(seed: Optional[int]) -> np.random.Generator:
    return np.random.default_rng(seed)
