"""Seeded, reproducible client partitions of a labelled dataset.

Each partitioner returns a :class:`Partitions`: one index array per client into the dataset, plus a
per-client report (class histogram, domain) that is saved with the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hf_trust.atomic import atomic_write_json
from hf_trust.errors import HFTrustCacheError, HFTrustDataError, PartitionError


@dataclass
class Partitions:
    """Client index sets over one dataset.

    Attributes:
        indices: ``indices[k]`` are the dataset rows of client ``k`` (sorted).
        labels: the label of every dataset row (for reports).
        domains: the domain of every row, or ``None``.
        client_domains: the domain each client was assigned (domain partitions), else ``None``.
        method / params: how the partition was made, recorded for reproducibility.
        dataset: the partitioned dataset, if given to ``split``; ``client_dataset(k)`` uses it.
    """

    indices: list[np.ndarray]
    labels: np.ndarray
    domains: Optional[np.ndarray] = None
    client_domains: Optional[list[str]] = None
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    dataset: Any = None

    @property
    def num_clients(self) -> int:
        return len(self.indices)

    def sizes(self) -> list[int]:
        return [len(ix) for ix in self.indices]

    def client_dataset(self, k: int):
        if self.dataset is None:
            raise HFTrustDataError("these partitions hold no dataset; pass the dataset to split(...).")
        return self.dataset.select(self.indices[k].tolist())

    def histogram(self) -> np.ndarray:
        """``(num_clients, num_classes)`` class counts."""
        classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        return np.stack([np.bincount(self.labels[ix], minlength=classes) for ix in self.indices])

    def report(self) -> list[dict[str, Any]]:
        """One row per client: size, class histogram and domain(s)."""
        hist = self.histogram()
        rows = []
        for k, ix in enumerate(self.indices):
            row: dict[str, Any] = {"client": k, "size": int(len(ix)), "classes": hist[k].tolist()}
            if self.client_domains is not None:
                row["domain"] = self.client_domains[k]
            elif self.domains is not None:
                vals, cnt = np.unique(self.domains[ix], return_counts=True)
                row["domains"] = {str(v): int(c) for v, c in zip(vals, cnt)}
            rows.append(row)
        return rows

    def format_report(self) -> str:
        lines = [f"{self.method} {self.params}"]
        for row in self.report():
            extra = f" domain={row['domain']}" if "domain" in row else ""
            lines.append(f"client {row['client']:3d} n={row['size']:6d}{extra} classes={row['classes']}")
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        """Write the partition (indices, method, parameters, report) as JSON, atomically."""
        payload = {
            "method": self.method,
            "params": self.params,
            "indices": [ix.tolist() for ix in self.indices],
            "client_domains": self.client_domains,
            "report": self.report(),
        }
        atomic_write_json(path, payload, indent=None)

    @classmethod
    def load(
        cls, path: str | Path, labels: Sequence[int], domains: Optional[Sequence] = None, dataset=None
    ) -> Partitions:
        """Read a partition written by :meth:`save`; a truncated or foreign file raises
        :class:`~hf_trust.errors.HFTrustCacheError` naming it."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HFTrustCacheError(
                f"{path} is truncated or not JSON ({exc}); re-create it by splitting the dataset again "
                f"with the partitioner and seed recorded for the run."
            ) from exc
        missing = {"indices", "client_domains", "method", "params"} - set(payload if isinstance(payload, dict) else {})
        if missing:
            raise HFTrustCacheError(f"{path} is not a saved partition (missing {sorted(missing)}).")
        n = len(labels)
        if any(len(ix) and (min(ix) < 0 or max(ix) >= n) for ix in payload["indices"]):
            raise HFTrustCacheError(
                f"{path} indexes rows outside the {n} labels given; it was saved for another dataset."
            )
        _check_labels(np.asarray(labels), "labels")
        return cls(
            [np.asarray(ix, dtype=np.int64) for ix in payload["indices"]],
            np.asarray(labels),
            None if domains is None else np.asarray(domains),
            payload["client_domains"],
            payload["method"],
            payload["params"],
            dataset,
        )


def _check_labels(labels: np.ndarray, column: str) -> np.ndarray:
    """Labels must be integer class ids ``0..C-1``: the partitioners group rows by them and every report
    counts them with ``bincount``.  Strings, floats or negatives are refused with the fix."""
    if labels.ndim != 1:
        raise PartitionError(f"column {column!r} must hold one label per row; got an array of shape {labels.shape}.")
    if labels.dtype == bool or len(labels) == 0:  # an empty column has no dtype to speak of
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        example = labels[0].item() if len(labels) and hasattr(labels[0], "item") else labels[0] if len(labels) else None
        kind = "strings" if labels.dtype.kind in "US" or labels.dtype == object else f"{labels.dtype} values"
        raise PartitionError(
            f"column {column!r} holds {kind} (e.g. {example!r}); partitioners need integer class ids 0..C-1. "
            f"Map the labels first, e.g. dataset = dataset.class_encode_column({column!r}) for strings or "
            f"dataset.cast_column({column!r}, datasets.Value('int64')) for whole-number floats."
        )
    if len(labels) and labels.min() < 0:
        raise PartitionError(
            f"column {column!r} holds negative labels (min {labels.min()}); use class ids 0..C-1 and drop "
            f"unlabelled rows (label -1) before partitioning."
        )
    return labels


def _column(ds: Any, column: str) -> np.ndarray:
    if isinstance(ds, (np.ndarray, list, tuple)):
        return np.asarray(ds)
    if column not in getattr(ds, "column_names", []):
        raise PartitionError(
            f"column {column!r} not found in the dataset (columns: {getattr(ds, 'column_names', None)}); "
            f"pass label_column=/domain_column= naming it."
        )
    return np.asarray(ds[column])


class _Partitioner:
    num_clients: int
    seed: int

    def _check(self, n: int) -> None:
        if self.num_clients < 1:
            raise PartitionError(f"num_clients must be ≥ 1, got {self.num_clients}.")
        if n == 0:
            raise PartitionError("the dataset is empty; nothing to partition.")
        if self.num_clients > n:
            raise PartitionError(f"{self.num_clients} clients but only {n} samples; use fewer clients.")

    def split(self, dataset: Any, label_column: str = "label", domain_column: Optional[str] = None) -> Partitions:
        labels = _check_labels(_column(dataset, label_column), label_column)
        domains = _column(dataset, domain_column) if domain_column else None
        self._check(len(labels))
        parts = self._split(labels, domains, np.random.default_rng(self.seed))
        parts.dataset = None if isinstance(dataset, (np.ndarray, list, tuple)) else dataset
        return parts

    def _split(self, labels: np.ndarray, domains: Optional[np.ndarray], rng: np.random.Generator) -> Partitions:
        raise NotImplementedError


@dataclass
class IIDPartitioner(_Partitioner):
    """Uniformly random, near-equal shards."""

    num_clients: int
    seed: int = 0

    def _split(self, labels, domains, rng):
        perm = rng.permutation(len(labels))
        return Partitions(
            [np.sort(s) for s in np.array_split(perm, self.num_clients)],
            labels,
            domains,
            method="iid",
            params={"num_clients": self.num_clients, "seed": self.seed},
        )


def _dirichlet_split(
    labels: np.ndarray,
    rows: np.ndarray,
    num_clients: int,
    alpha: float,
    min_size: int,
    min_per_class: int,
    rng: np.random.Generator,
    max_retries: int,
) -> list[np.ndarray]:
    """Label-skew split of ``rows`` (the NIID-Bench reference loop).

    For each class, client shares come from Dir(α); a client that already holds at least the average
    ``len(rows)/num_clients`` gets share 0 for the remaining classes (the per-client cap), and the draw is
    repeated until every client has ``min_size`` rows (and ``min_per_class`` of every class, if asked).
    """
    classes = np.unique(labels[rows])
    n = len(rows)
    if min_per_class * len(classes) > n // num_clients + 1 and min_per_class > 0:
        raise PartitionError(
            f"min_per_class={min_per_class} × {len(classes)} classes exceeds the average client size "
            f"{n // num_clients}; lower min_per_class or use fewer clients."
        )
    for _ in range(max_retries):
        buckets: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rows[labels[rows] == c]
            idx = idx[rng.permutation(len(idx))]
            if min_per_class:
                if len(idx) < min_per_class * num_clients:
                    raise PartitionError(
                        f"class {c} has {len(idx)} samples, fewer than min_per_class × clients = "
                        f"{min_per_class * num_clients}."
                    )
                for k in range(num_clients):
                    buckets[k] += idx[k * min_per_class : (k + 1) * min_per_class].tolist()
                idx = idx[num_clients * min_per_class :]
            if math.isinf(alpha):
                shares = np.full(num_clients, 1.0 / num_clients)
            else:
                shares = rng.dirichlet(np.full(num_clients, alpha))
                shares = np.array([p * (len(b) < n / num_clients) for p, b in zip(shares, buckets)])
                if shares.sum() == 0:
                    shares = np.full(num_clients, 1.0 / num_clients)
                shares = shares / shares.sum()
            cuts = (np.cumsum(shares) * len(idx)).astype(int)[:-1]
            for k, part in enumerate(np.split(idx, cuts)):
                buckets[k] += part.tolist()
        if min(len(b) for b in buckets) >= min_size:
            return [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets]
    raise PartitionError(
        f"could not give every one of {num_clients} clients ≥ {min_size} samples with alpha={alpha} after "
        f"{max_retries} draws; raise alpha, lower min_size or use fewer clients."
    )


@dataclass
class DirichletLabelPartitioner(_Partitioner):
    """Label skew: class shares per client drawn from Dir(α) (α → ∞ gives IID class proportions).

    Args:
        num_clients: number of clients.
        alpha: Dirichlet concentration (> 0; ``float("inf")`` = IID proportions).
        min_size: every client gets at least this many rows (the reference code's retry loop).
        min_per_class: give every client at least this many rows of every class first (the "≥ k samples
            of every class" option; GGEUR's protocol uses 1).
        max_retries: draws before giving up with a clear error.
    """

    num_clients: int
    alpha: float
    min_size: int = 10
    min_per_class: int = 0
    seed: int = 0
    max_retries: int = 1000

    def __post_init__(self):
        if not self.alpha > 0:
            raise PartitionError(f"alpha must be > 0 (use float('inf') for IID), got {self.alpha}.")

    def _split(self, labels, domains, rng):
        rows = np.arange(len(labels))
        idx = _dirichlet_split(
            labels, rows, self.num_clients, self.alpha, self.min_size, self.min_per_class, rng, self.max_retries
        )
        return Partitions(
            idx,
            labels,
            domains,
            method="dirichlet",
            params={
                "num_clients": self.num_clients,
                "alpha": self.alpha,
                "min_size": self.min_size,
                "min_per_class": self.min_per_class,
                "seed": self.seed,
            },
        )


@dataclass
class FixedClassesPartitioner(_Partitioner):
    """Each client holds ``classes_per_client`` classes; a class's rows are split among its holders."""

    num_clients: int
    classes_per_client: int
    seed: int = 0

    def _split(self, labels, domains, rng):
        classes = np.unique(labels)
        if not 1 <= self.classes_per_client <= len(classes):
            raise PartitionError(f"classes_per_client must be in [1, {len(classes)}], got {self.classes_per_client}.")
        # Round-robin over a shuffled class list so that every class has a holder when possible.
        order = rng.permutation(classes)
        held = [
            [order[(k * self.classes_per_client + j) % len(order)] for j in range(self.classes_per_client)]
            for k in range(self.num_clients)
        ]
        buckets: list[list[int]] = [[] for _ in range(self.num_clients)]
        for c in classes:
            owners = [k for k in range(self.num_clients) if c in held[k]]
            if not owners:
                continue
            idx = rng.permutation(np.flatnonzero(labels == c))
            for k, part in zip(owners, np.array_split(idx, len(owners))):
                buckets[k] += part.tolist()
        return Partitions(
            [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets],
            labels,
            domains,
            method="fixed_classes",
            params={"num_clients": self.num_clients, "classes_per_client": self.classes_per_client, "seed": self.seed},
        )


@dataclass
class DomainPartitioner(_Partitioner):
    """Domain shift: client k lives in domain ``k mod D``; each domain's rows go to its clients, either
    uniformly or (``alpha`` given) with Dirichlet label skew inside the domain."""

    num_clients: int
    alpha: Optional[float] = None
    min_size: int = 1
    seed: int = 0
    max_retries: int = 1000

    def __post_init__(self):
        if self.alpha is not None and not self.alpha > 0:
            raise PartitionError(f"alpha must be > 0 or None, got {self.alpha}.")

    def split(self, dataset: Any, label_column: str = "label", domain_column: Optional[str] = "domain") -> Partitions:
        if not domain_column:
            raise PartitionError("DomainPartitioner needs domain_column= naming the domain of each row.")
        return super().split(dataset, label_column, domain_column)

    def _split(self, labels, domains, rng):
        names = sorted(np.unique(domains).tolist())
        if self.num_clients < len(names):
            raise PartitionError(f"{len(names)} domains need at least as many clients, got {self.num_clients}.")
        client_domains = [names[k % len(names)] for k in range(self.num_clients)]
        indices: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * self.num_clients
        for d in names:
            owners = [k for k, cd in enumerate(client_domains) if cd == d]
            rows = np.flatnonzero(domains == d)
            if self.alpha is None:
                parts = [np.sort(p) for p in np.array_split(rng.permutation(rows), len(owners))]
            else:
                parts = _dirichlet_split(labels, rows, len(owners), self.alpha, self.min_size, 0, rng, self.max_retries)
            for k, p in zip(owners, parts):
                indices[k] = p
        return Partitions(
            indices,
            labels,
            domains,
            client_domains,
            method="domain",
            params={"num_clients": self.num_clients, "alpha": self.alpha, "seed": self.seed},
        )
