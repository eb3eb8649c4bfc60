"""Interop with ``flwr_datasets`` partitioners.

* :func:`partitions_to_flwr` turns our :class:`Partitions` into a ``flwr_datasets`` partitioner
  (:class:`PartitionsPartitioner`) that serves exactly the same rows per partition id (for code written against
  ``FederatedDataset`` / ``partitioner.load_partition(k)``).
* :func:`partitions_from_flwr` runs any ``flwr_datasets`` partitioner (``DirichletPartitioner``, ``IidPartitioner``,
  ``PathologicalPartitioner`` ...) and returns our :class:`Partitions` (with the class-histogram report), ready for
  ``FederatedTrainer`` or :class:`FlowerFederation`.
* :func:`dirichlet_to_flwr` / :func:`dirichlet_from_flwr` translate between our ``DirichletLabelPartitioner`` and
  their ``DirichletPartitioner``.

α and seed semantics of the two Dirichlet partitioners
------------------------------------------------------
Both implement the NIID-Bench loop: for every class (in sorted order) the shares of the K clients are drawn from
a symmetric Dirichlet ``Dir(α·1_K)``, the class's rows are cut at the cumulative shares, and the whole draw is
repeated until every client has ``min_size`` (their ``min_partition_size``) rows.  Hence the same α gives the same
label skew (``α → ∞``: every client has the global class proportions; ``α = 0.1``: most clients hold one or two
classes).  The differences, all documented here and measured in ``tests/flower``:

* **balancing**: ours always gives a client that already holds at least the average n/K rows share 0 of the
  remaining classes; theirs does so only with ``self_balancing=True`` (default ``False``) and from strictly more
  than n/K.  :func:`dirichlet_to_flwr` sets ``self_balancing=True``; with ``False`` theirs skews client sizes more.
* **α forms**: theirs also takes one α per client (a vector); ours a scalar, or ``float("inf")`` (IID proportions),
  which theirs cannot express.
* **retries**: ours up to ``max_retries`` (1000) draws, theirs 10 before ``ValueError``.
* **seed**: both seed ``numpy.random.default_rng(seed)`` but consume it in a different order (ours shuffles each
  class's rows before its draw; theirs draws first and shuffles each partition's rows afterwards), so the *same
  seed gives a different partition*; the statistics of the partitions (per-client class concentration, classes
  held, size spread) agree for the same α.  For identical rows on both sides convert the partition itself
  (:func:`partitions_to_flwr` / :func:`partitions_from_flwr`), not the partitioner.
* ``min_per_class`` (ours) has no equivalent in theirs; :func:`dirichlet_to_flwr` refuses it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from hf_trust.errors import HFTrustConfigError, MissingExtraError

from ..partition import DirichletLabelPartitioner, Partitions

try:
    from flwr_datasets.partitioner import DirichletPartitioner
    from flwr_datasets.partitioner import Partitioner as _FlwrPartitioner

    _FLWR_DATASETS_ERROR: Optional[ImportError] = None
except ImportError as _exc:  # pragma: no cover - exercised by simulating the missing module
    DirichletPartitioner = None  # type: ignore[assignment,misc]
    _FlwrPartitioner = object  # type: ignore[assignment,misc]
    _FLWR_DATASETS_ERROR = _exc

_ROW = "__hf_trust_row__"


def _require_flwr_datasets() -> None:
    if _FLWR_DATASETS_ERROR is None:
        return
    missing = getattr(_FLWR_DATASETS_ERROR, "name", None) or "flwr_datasets"
    if missing.split(".")[0] != "flwr_datasets":
        # flwr-datasets is there (installed --no-deps) but one of its own imports is not: name that one
        raise MissingExtraError(
            f"the flwr_datasets interop: flwr_datasets is installed but cannot import {missing!r} "
            f"({_FLWR_DATASETS_ERROR}); install it with: pip install {missing.split('.')[0]}"
        ) from _FLWR_DATASETS_ERROR
    raise MissingExtraError(
        "the flwr_datasets interop needs flwr-datasets; install it with: pip install --no-deps "
        '"flwr-datasets>=0.6" seaborn (flwr-datasets declares datasets<5, below this stack; its partitioners work '
        "with datasets 5, and --no-deps skips its plotting dependency seaborn)"
    ) from _FLWR_DATASETS_ERROR


class PartitionsPartitioner(_FlwrPartitioner):  # type: ignore[misc,valid-type]
    """A ``flwr_datasets`` partitioner serving fixed index sets: partition ``k`` is ``dataset.select(indices[k])``."""

    def __init__(self, indices: list[np.ndarray], dataset: Any = None):
        _require_flwr_datasets()
        super().__init__()
        self._indices = [np.asarray(ix, dtype=np.int64) for ix in indices]
        if dataset is not None:
            self.dataset = dataset

    def load_partition(self, partition_id: int):
        if not 0 <= partition_id < len(self._indices):
            raise HFTrustConfigError(f"partition_id must be in [0, {len(self._indices)}), got {partition_id}.")
        return self.dataset.select(self._indices[partition_id].tolist())

    @property
    def num_partitions(self) -> int:
        return len(self._indices)


def partitions_to_flwr(parts: Partitions, dataset: Any = None) -> PartitionsPartitioner:
    """Our partition as a ``flwr_datasets`` partitioner over ``dataset`` (default: the one it was split from)."""
    ds = dataset if dataset is not None else parts.dataset
    if ds is None:
        raise HFTrustConfigError("these partitions hold no dataset; pass dataset= (a datasets.Dataset).")
    return PartitionsPartitioner(parts.indices, ds)


def partitions_from_flwr(
    partitioner: Any,
    dataset: Any = None,
    label_column: str = "label",
    domain_column: Optional[str] = None,
) -> Partitions:
    """Run a ``flwr_datasets`` partitioner and return our :class:`Partitions` (rows sorted per client).

    ``dataset`` is assigned to the partitioner if it has none yet (a row-index column is added to what the
    partitioner sees, to recover the rows); a partitioner that already holds a dataset must be a
    ``DirichletPartitioner`` or a :class:`PartitionsPartitioner`, whose index sets are read directly.
    """
    _require_flwr_datasets()
    if isinstance(partitioner, PartitionsPartitioner):
        base = partitioner.dataset
        indices = [np.sort(ix) for ix in partitioner._indices]
    elif not partitioner.is_dataset_assigned():
        if dataset is None:
            raise HFTrustConfigError("the partitioner has no dataset yet; pass dataset= to partition.")
        partitioner.dataset = dataset.add_column(_ROW, list(range(len(dataset))))
        n = partitioner.num_partitions
        indices = [np.sort(np.asarray(partitioner.load_partition(k)[_ROW], dtype=np.int64)) for k in range(n)]
        base = dataset
    else:
        base = partitioner.dataset
        if _ROW in base.column_names:
            n = partitioner.num_partitions
            indices = [np.sort(np.asarray(partitioner.load_partition(k)[_ROW], dtype=np.int64)) for k in range(n)]
            base = base.remove_columns(_ROW)
        elif hasattr(partitioner, "_partition_id_to_indices"):
            n = partitioner.num_partitions  # triggers the partitioning
            mapping = partitioner._partition_id_to_indices
            indices = [np.sort(np.asarray(mapping[k], dtype=np.int64)) for k in range(n)]
        else:
            raise HFTrustConfigError(
                f"{type(partitioner).__name__} already holds a dataset and does not expose its index sets; pass a "
                "fresh partitioner and dataset= instead."
            )
    ds = dataset if dataset is not None else base
    labels = np.asarray(ds[label_column])
    domains = np.asarray(ds[domain_column]) if domain_column else None
    params = {
        k.lstrip("_"): (v.tolist() if isinstance(v, np.ndarray) else v)
        for k, v in vars(partitioner).items()
        if k in ("_num_partitions", "_alpha", "_min_partition_size", "_self_balancing", "_shuffle", "_seed")
    }
    return Partitions(
        indices, labels, domains, method=f"flwr_datasets.{type(partitioner).__name__}", params=params, dataset=ds
    )


def dirichlet_to_flwr(partitioner: DirichletLabelPartitioner, label_column: str = "label") -> Any:
    """Their ``DirichletPartitioner`` with our partitioner's α, client count, minimum size, seed and balancing."""
    _require_flwr_datasets()
    if partitioner.min_per_class:
        raise HFTrustConfigError(
            "flwr_datasets' DirichletPartitioner has no min_per_class; convert the partition itself with "
            "partitions_to_flwr(parts) instead."
        )
    if math.isinf(partitioner.alpha):
        raise HFTrustConfigError(
            "alpha=inf (IID class proportions) has no DirichletPartitioner form; use IidPartitioner."
        )
    return DirichletPartitioner(
        num_partitions=partitioner.num_clients,
        partition_by=label_column,
        alpha=float(partitioner.alpha),
        min_partition_size=partitioner.min_size,
        self_balancing=True,
        shuffle=True,
        seed=partitioner.seed,
    )


def dirichlet_from_flwr(partitioner: Any) -> DirichletLabelPartitioner:
    """Our ``DirichletLabelPartitioner`` with their partitioner's settings (a per-client α vector must be constant;
    ``self_balancing=False`` cannot be expressed: ours always balances)."""
    _require_flwr_datasets()
    alpha = np.asarray(partitioner._alpha, dtype=float)
    if not np.allclose(alpha, alpha.flat[0]):
        raise HFTrustConfigError("a per-client alpha vector has no DirichletLabelPartitioner form (ours is symmetric).")
    if not partitioner._self_balancing:
        raise HFTrustConfigError(
            "DirichletLabelPartitioner always balances client sizes (self_balancing=True); build the flwr_datasets "
            "partitioner with self_balancing=True, or convert its partition with partitions_from_flwr()."
        )
    seed = partitioner._seed if partitioner._seed is not None else 0
    return DirichletLabelPartitioner(
        num_clients=int(partitioner._num_partitions),
        alpha=float(alpha.flat[0]),
        min_size=int(partitioner._min_partition_size),
        seed=int(seed),
    )
