"""GGEUR's statistics protocol: what a client sends and how the server pools it (spec b.2-b.3, d).

A client sends, per class it holds, either the sufficient statistics ``(S0, S1, S2) = (n, Σz, Σzzᵀ)``
or the literal message of the official code ``(n, μ, Σ)`` with the biased covariance.  Both are
float64 and both give the covariance of the pooled data exactly.  No embedding row ever leaves a
client; :func:`check_statistics_only` verifies that on the serialised payload.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustTypeError

Form = Literal["moments", "mean_cov"]


@dataclass
class ClassStatistics:
    """One client's message for one class.

    ``form="moments"``: ``first = Σz`` and ``second = Σzzᵀ``; ``form="mean_cov"``: ``first = μ`` and
    ``second = (1/n) Σ (z-μ)(z-μ)ᵀ`` (the official code's biased covariance).
    """

    n: int
    first: np.ndarray
    second: np.ndarray
    form: Form = "moments"

    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        """``(S0, S1, S2)`` whatever the form."""
        if self.form == "moments":
            return float(self.n), self.first, self.second
        mu = self.first
        return float(self.n), self.n * mu, self.n * (self.second + np.outer(mu, mu))

    def mean(self) -> np.ndarray:
        return self.first / self.n if self.form == "moments" else self.first


@dataclass
class ClientStatistics:
    """The whole client → server payload: per-class statistics and nothing else."""

    client_id: int
    dim: int
    classes: dict[int, ClassStatistics] = field(default_factory=dict)
    domain: Optional[str] = None

    def counts(self) -> dict[int, int]:
        return {c: s.n for c, s in self.classes.items()}


def client_statistics(
    embeddings: np.ndarray,
    labels: Sequence[int],
    client_id: int = 0,
    form: Form = "moments",
    domain: Optional[str] = None,
) -> ClientStatistics:
    """Compute one client's per-class message from its embeddings (float64 throughout)."""
    z = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2:
        raise HFTrustDataError(f"embeddings must be a 2-D array (rows × dim), got shape {z.shape}; reshape them.")
    if len(y) != len(z):
        raise HFTrustDataError(
            f"{len(z)} embeddings but {len(y)} labels; they must match row for row (one label per embedding)."
        )
    if form not in ("moments", "mean_cov"):
        raise HFTrustConfigError(f"form must be 'moments' or 'mean_cov', got {form!r}.")
    out = ClientStatistics(client_id=client_id, dim=z.shape[1], domain=domain)
    for c in np.unique(y):
        zc = z[y == c]
        n = len(zc)
        if form == "moments":
            out.classes[int(c)] = ClassStatistics(n, zc.sum(0), zc.T @ zc, form)
        else:
            mu = zc.mean(0)
            d = zc - mu
            out.classes[int(c)] = ClassStatistics(n, mu, d.T @ d / n, form)
    return out


def guide_set(counts: Mapping[int, int], threshold: Optional[float]) -> list[int]:
    """Clients whose statistics enter a class's global shape (spec b.3).

    Sort the clients holding the class by count, descending, and take the shortest prefix whose
    cumulative count reaches ``threshold`` × the class total.  ``None`` (or ≥ 1) takes every client.
    Ties are broken by client id so that every process picks the same set.
    """
    held = sorted(((n, cid) for cid, n in counts.items() if n > 0), key=lambda t: (-t[0], t[1]))
    if threshold is None or threshold >= 1.0:
        return sorted(cid for _, cid in held)
    if not 0.0 < threshold:
        raise HFTrustConfigError(f"guide_threshold must be in (0, 1] or None, got {threshold}.")
    total = sum(n for n, _ in held)
    chosen, running = [], 0
    for n, cid in held:
        chosen.append(cid)
        running += n
        if running >= threshold * total:
            break
    return sorted(chosen)


@dataclass
class PooledClass:
    """The server's pooled statistics of one class."""

    n: float
    mean: np.ndarray
    cov: np.ndarray


def pool_moments(s0: float, s1: np.ndarray, s2: np.ndarray) -> PooledClass:
    """μ = S1/S0, Σ = S2/S0 − μμᵀ (biased), symmetrised against round-off."""
    mu = s1 / s0
    cov = s2 / s0 - np.outer(mu, mu)
    return PooledClass(s0, mu, (cov + cov.T) / 2)


def aggregate_class(messages: Iterable[ClassStatistics]) -> PooledClass:
    """Pool one class over the given client messages (exactly the pooled-data covariance)."""
    s0, s1, s2 = 0.0, None, None
    for msg in messages:
        a, b, c = msg.moments()
        s0 += a
        s1 = b.copy() if s1 is None else s1 + b
        s2 = c.copy() if s2 is None else s2 + c
    if s1 is None:
        raise HFTrustDataError(
            "aggregate_class got no message: no client holds this class; pass at least one ClassStatistics."
        )
    return pool_moments(s0, s1, s2)


def aggregate(
    payloads: Sequence[ClientStatistics],
    guide_threshold: Optional[float] = 0.8,
    classes: Optional[Iterable[int]] = None,
) -> dict[int, PooledClass]:
    """Pool every class (or the given ``classes``, e.g. one chunk) over its guide set."""
    for p in payloads:
        check_statistics_only(p)
    all_classes = sorted({c for p in payloads for c in p.classes}) if classes is None else list(classes)
    out = {}
    for c in all_classes:
        counts = {p.client_id: p.classes[c].n for p in payloads if c in p.classes}
        if not counts:
            continue
        chosen = set(guide_set(counts, guide_threshold))
        out[c] = aggregate_class(p.classes[c] for p in payloads if p.client_id in chosen and c in p.classes)
    return out


def check_statistics_only(payload: ClientStatistics) -> int:
    """Raise if a client payload carries anything but per-class statistics; return its byte size.

    The check walks the serialised object: only the dataclasses above, ints, strings and float64 arrays
    of shape ``(d,)`` or ``(d, d)`` may appear, and ``n`` must be a positive count.  An array of any other
    shape (for example rows of embeddings) is refused.
    """
    if not isinstance(payload, ClientStatistics):
        raise HFTrustTypeError(
            f"payload must be ClientStatistics (build it with client_statistics), got {type(payload).__name__}."
        )
    d = payload.dim
    for obj in (payload, *payload.classes.values()):
        extra = set(vars(obj)) - set(type(obj).__dataclass_fields__)
        if extra:
            raise HFTrustDataError(
                f"payload holds {sorted(extra)}, which is not a statistic; send only what client_statistics builds."
            )
    for c, s in payload.classes.items():
        if not isinstance(s, ClassStatistics) or not isinstance(c, (int, np.integer)):
            raise HFTrustDataError(f"class {c!r}: payload entries must be ClassStatistics keyed by class id.")
        if int(s.n) != s.n or s.n < 1:
            raise HFTrustDataError(f"class {c}: n must be a positive count, got {s.n!r}.")
        if np.shape(s.first) != (d,) or np.shape(s.second) != (d, d):
            raise HFTrustDataError(
                f"class {c}: statistics must have shapes ({d},) and ({d}, {d}), got "
                f"{np.shape(s.first)} and {np.shape(s.second)}; a payload may not carry embedding rows."
            )
        if np.asarray(s.first).dtype != np.float64 or np.asarray(s.second).dtype != np.float64:
            raise HFTrustDataError(f"class {c}: statistics must be float64; cast them with .astype(np.float64).")
    allowed = {ClientStatistics, ClassStatistics}
    buf = io.BytesIO()
    pickle.dump(payload, buf)

    class _Checker(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            obj = super().find_class(module, name)
            if obj in allowed or module.startswith("numpy") or (module, name) == ("builtins", "dict"):
                return obj
            raise HFTrustDataError(
                f"payload holds a {module}.{name}, which is not a statistic; send only what client_statistics builds."
            )

    _Checker(io.BytesIO(buf.getvalue())).load()
    return len(buf.getvalue())
