"""GGEURTrainer: statistics round → global shapes → local augmentation → federated training of a head.

GGEUR is a pre-processing stage in front of any strategy of the federated core: clients send per-class
statistics once, the server pools them exactly and ships back eigen-decompositions (the "global
geometric shapes"), each client augments its own embeddings along them, and the linear classifier is
then trained by ordinary federated rounds (:class:`hf_trust.trainers.federated.FederatedTrainer`).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustStateError
from hf_trust.trainers.federated import (
    ClassMoments,
    ClientContext,
    ClientResult,
    FederatedConfig,
    FederatedTrainer,
    Partitions,
    Strategy,
    SupervisedClientTrainer,
    derived_seed,
    reduce_moments,
)

from .augment import AugmentedSet, augment_multi_domain, augment_single_domain
from .config import GGEURConfig, check_federation
from .geometry import GeometricShape, isotropic_shape
from .statistics import ClientStatistics, check_statistics_only, client_statistics, guide_set

logger = logging.getLogger("hf_trust.trainers.ggeur")


def _l2(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


class HeadClientTrainer(SupervisedClientTrainer):
    """Linear head training; ``official`` adds the released script's double softmax and per-client heads
    that never receive the global model (only the server copy is averaged)."""

    def __init__(self, model: nn.Module, official: bool, **kw):
        super().__init__(model, **kw)
        self.official = official
        if official:
            self.loss_fn = self._double_softmax

    @staticmethod
    def _double_softmax(model, x, y):
        logits = model(x)
        return nn.functional.cross_entropy(torch.softmax(logits, -1), y), logits

    def fit(self, ctx: ClientContext) -> ClientResult:
        if self.official and "head" in ctx.state:
            self.model.load_state_dict(ctx.state["head"])
        result = super().fit(ctx)
        if self.official:
            ctx.state["head"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return result


class _AugmentedPartitions(Partitions):
    """Client ``k``'s data = its real embeddings plus its augmentation, generated on first use with a seed
    derived from (run seed, client) so that it does not depend on the process hosting the client."""

    def __init__(self, base: Partitions, make):
        super().__init__(
            base.indices, base.labels, base.domains, base.client_domains, base.method, base.params, base.dataset
        )
        self._make = make
        self.cache: dict[int, AugmentedSet] = {}

    def augmented(self, k: int) -> AugmentedSet:
        if k not in self.cache:
            if self._make is None:
                raise HFTrustStateError(
                    "the augmented rows were released after fit(); set GGEURConfig(keep_augmented=True) to keep them."
                )
            aug = self._make(k)
            # float32 is what the head trains on; the float64 draws would double the memory of every client
            aug.embeddings = aug.embeddings.astype(np.float32)
            self.cache[k] = aug
        return self.cache[k]

    def release(self) -> None:
        """Drop the augmented data (and the reference back to the trainer that made it)."""
        self.cache.clear()
        self._make = None

    def client_dataset(self, k: int) -> dict:
        aug = self.augmented(k)
        return {"x": torch.as_tensor(aug.embeddings, dtype=torch.float32), "label": torch.as_tensor(aug.labels)}


class GGEURTrainer:
    """Federated training of a linear head on frozen embeddings, with GGEUR's augmentation in front.

    Args:
        config: :class:`GGEURConfig` (GGEUR's options and the head's optimiser).
        strategy: any strategy of the federated core (``FedAvg()``, ``FedProx(mu=...)``, ...); an unweighted
            one (``FedAvg(weighted=False)``) with ``compat="official"``.
        fed_config: rounds, local epochs (the one place they are set; the released code trains 10), client
            sampling, output folder (:class:`FederatedConfig`).
        eval_datasets: name → embedding dataset evaluated every round (e.g. the global test set and one
            per domain).
        embedding_column / label_column / domain_column: columns of the embedding datasets.
    """

    def __init__(
        self,
        config: GGEURConfig,
        strategy: Strategy,
        fed_config: FederatedConfig,
        eval_datasets: Optional[dict[str, Any]] = None,
        accelerator: Any = None,
        embedding_column: str = "embedding",
        label_column: str = "label",
        domain_column: str = "domain",
    ):
        self.config = config
        self.strategy = strategy
        self.fed_config = fed_config
        self.eval_datasets = eval_datasets or {}
        self.accelerator = accelerator
        self.emb_col, self.label_col, self.domain_col = embedding_column, label_column, domain_column
        self.shapes: dict[int, GeometricShape] = {}  # empty for augment="none"/"oversample"/"local_cov"
        self.shape_classes: list[int] = []
        self.class_counts: dict[int, int] = {}
        self.prototypes: dict[str, dict[int, np.ndarray]] = {}
        self.payload_bytes: list[int] = []
        self.federation: Optional[FederatedTrainer] = None
        self.partitions: Optional[_AugmentedPartitions] = None

    # ------------------------------------------------------------------ data access
    def client_arrays(self, parts: Partitions, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Client ``k``'s embeddings (L2-normalised when configured) and labels."""
        sub = parts.client_dataset(k)
        z = np.asarray(sub[self.emb_col], dtype=np.float64)
        y = np.asarray(sub[self.label_col], dtype=np.int64)
        if z.ndim != 2:
            raise HFTrustDataError(
                f"column {self.emb_col!r} must hold one embedding vector per row; got shape {z.shape}."
            )
        return (_l2(z) if self.config.normalize else z), y

    def _check_labels(self, y: np.ndarray, where: str) -> np.ndarray:
        if y.ndim != 1 or (len(y) and not np.issubdtype(y.dtype, np.integer)):
            raise HFTrustDataError(
                f"column {self.label_col!r} of {where} must hold integer class ids 0..C-1, got dtype {y.dtype} "
                f"(e.g. {y[:1].tolist()}); map the labels first (dataset.class_encode_column)."
            )
        if len(y) and y.min() < 0:
            row = int(np.argmin(y))
            raise HFTrustDataError(
                f"column {self.label_col!r} of {where} holds label {int(y[row])} (row {row}); labels must be class "
                f"ids 0..C-1. Drop unlabelled rows (label -1) before building the embedding dataset."
            )
        return y.astype(np.int64)

    def _check_embeddings(self, z: np.ndarray, where: str, dim: Optional[int] = None) -> None:
        if z.ndim != 2:
            raise HFTrustDataError(
                f"column {self.emb_col!r} of {where} must hold one embedding vector per row; got shape {z.shape}."
            )
        if dim is not None and z.shape[1] != dim:
            raise HFTrustDataError(
                f"column {self.emb_col!r} of {where} has width {z.shape[1]} but the training embeddings have "
                f"width {dim}; embed it with the same encoder (and pooling) as the training data."
            )
        finite = np.isfinite(z).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            raise HFTrustDataError(
                f"column {self.emb_col!r} of {where} holds NaN/inf in {len(rows)} row(s) (first: row {rows[0]}); "
                f"a single one would make the pooled covariance, every shape and the global head NaN. Drop or "
                f"re-embed those rows."
            )

    def _as_matrix(self, column: Any, partitions: Partitions) -> np.ndarray:
        """The training embeddings as one float64 matrix, or a clear error naming the clients whose rows
        have another width (numpy would only say "inhomogeneous shape")."""
        try:
            return np.asarray(column, dtype=np.float64)
        except ValueError:
            widths = np.asarray([np.size(row) for row in column])
        by_width: dict[int, list[int]] = {}
        for k, ix in enumerate(partitions.indices):
            for w in sorted(set(widths[np.asarray(ix, dtype=np.int64)].tolist())):
                by_width.setdefault(w, []).append(k)

        def clients(ks: list[int]) -> str:
            return f"client {ks[0]}" if len(ks) == 1 else f"clients {ks[:8]}{' …' if len(ks) > 8 else ''}"

        shown = "; ".join(f"width {w}: {clients(ks)}" for w, ks in sorted(by_width.items()))
        raise HFTrustDataError(
            f"column {self.emb_col!r} of the training data holds embeddings of different widths "
            f"{sorted(by_width)} ({shown}). Every client must embed with the same encoder and pooling: re-embed "
            f"the rows of the odd clients."
        ) from None

    def _validate(self, partitions: Partitions) -> None:
        """Checks every row before the statistics round, on every rank alike (so that no rank raises alone)."""
        data = partitions.dataset.with_format("numpy")
        z = self._as_matrix(data[self.emb_col], partitions)
        try:
            self._check_embeddings(z, "the training data")
        except HFTrustDataError as exc:
            bad = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0]) if z.ndim == 2 else None
            owner = [k for k, ix in enumerate(partitions.indices) if bad is not None and bad in set(ix.tolist())]
            raise HFTrustDataError(f"{exc} (held by client {owner[0] if owner else '?'})") from None
        y = self._check_labels(np.asarray(data[self.label_col]), "the training data")
        if self.config.num_classes is not None and len(y) and y.max() >= self.config.num_classes:
            raise HFTrustConfigError(
                f"the training labels go up to {int(y.max())} but GGEURConfig.num_classes={self.config.num_classes}; "
                f"set num_classes to at least {int(y.max()) + 1} (or leave it None to infer it)."
            )
        num_classes = self.config.num_classes or (int(y.max()) + 1 if len(y) else 0)
        seen = set(np.unique(y).tolist())
        for name, ds in self.eval_datasets.items():
            cols = getattr(ds, "column_names", list(ds) if isinstance(ds, dict) else [])
            for col in (self.emb_col, self.label_col):
                if col not in cols:
                    raise HFTrustDataError(f"column {col!r} not found in eval dataset {name!r} (columns: {cols}).")
            self._check_embeddings(np.asarray(ds[self.emb_col], dtype=np.float64), f"eval dataset {name!r}", z.shape[1])
            ey = self._check_labels(np.asarray(ds[self.label_col]), f"eval dataset {name!r}")
            if len(ey) and ey.max() >= num_classes:
                raise HFTrustDataError(
                    f"eval dataset {name!r} holds class {int(ey.max())}, which no training row has (the head has "
                    f"{num_classes} outputs). Drop those rows, or set GGEURConfig(num_classes={int(ey.max()) + 1}) "
                    f"to give the head an (untrained) output for it."
                )
            unseen = sorted(set(np.unique(ey).tolist()) - seen)
            if unseen:
                warnings.warn(
                    f"eval dataset {name!r} holds classes {unseen[:5]} that no client has; no augmentation can "
                    f"create them, so their accuracy will be ~0.",
                    stacklevel=3,
                )

    def eval_dict(self, ds: Any) -> dict:
        """An embedding dataset as the head's ``{"x", "label"}`` tensors."""
        z = np.asarray(ds[self.emb_col], dtype=np.float64)
        z = _l2(z) if self.config.normalize else z
        return {"x": torch.as_tensor(z, dtype=torch.float32), "label": torch.as_tensor(np.asarray(ds[self.label_col]))}

    # ------------------------------------------------------------------ statistics round
    def statistics_round(self, fed: FederatedTrainer, parts: Partitions) -> None:
        """Clients → per-class statistics → exact pooling (float64, class chunks) → shapes on rank 0 →
        broadcast to every rank.  Also pools per-domain class means (the multi-domain prototypes)."""
        cfg = self.config
        all_clients = list(range(parts.num_clients))
        num_classes = self.num_classes
        if not self._needs_moments():
            self._counts_only_round(fed, parts, all_clients)
            return
        payloads: dict[int, ClientStatistics] = {}
        for k in fed.hosted(all_clients):
            z, y = self.client_arrays(parts, k)
            domain = parts.client_domains[k] if parts.client_domains else None
            payload = client_statistics(z, y, client_id=k, form=cfg.stats_form, domain=domain)
            self.payload_bytes.append(check_statistics_only(payload))
            payloads[k] = payload
        # 1) counts of every (client, class): small, gathered so that all ranks pick the same guide sets
        counts = fed.gather_objects([(k, p.counts()) for k, p in payloads.items()])
        per_class: dict[int, dict[int, int]] = {}
        for k, cnt in counts:
            for c, n in cnt.items():
                per_class.setdefault(c, {})[k] = n
        threshold = cfg.guide_threshold if cfg.mode == "single_domain" else None
        guides = {c: set(guide_set(cnt, threshold)) for c, cnt in per_class.items()}
        self._warn_degenerate_shapes({c: sum(cnt[k] for k in guides[c]) for c, cnt in per_class.items()})
        self.class_counts = {c: int(sum(cnt.values())) for c, cnt in per_class.items()}
        # 2) each rank sums its guide clients' moments, then one chunked reduce
        dim = next(iter(payloads.values())).dim if payloads else self._dim(parts)
        local = ClassMoments.zeros(num_classes, dim)
        domains = sorted(set(parts.client_domains)) if parts.client_domains else []
        dom_s0 = torch.zeros(len(domains), num_classes, dtype=torch.float64)
        dom_s1 = torch.zeros(len(domains), num_classes, dim, dtype=torch.float64)
        for k, p in payloads.items():
            for c, msg in p.classes.items():
                s0, s1, s2 = msg.moments()
                if k in guides[c]:
                    local.s0[c] += s0
                    local.s1[c] += torch.from_numpy(s1)
                    local.s2[c] += torch.from_numpy(s2)
                if domains:
                    d = domains.index(p.domain)
                    dom_s0[d, c] += s0
                    dom_s1[d, c] += torch.from_numpy(s1)
        pooled = reduce_moments(local, fed.reduce_sum, chunk_size=cfg.class_chunk_size)
        self.pooled_mean, self.pooled_cov = pooled.pooled()
        if domains:
            dom_s0, dom_s1 = fed.reduce_sum(dom_s0), fed.reduce_sum(dom_s1)
            self.prototypes = {
                d: {c: (dom_s1[i, c] / dom_s0[i, c]).numpy() for c in range(num_classes) if dom_s0[i, c] > 0}
                for i, d in enumerate(domains)
            }
        # 3) eigendecomposition on rank 0, identical eigenvectors everywhere. The controls that never read a
        # shape's directions or spread ("none", "oversample", "local_cov") skip it: at d = 1280 the d×d
        # eigendecompositions are most of the run's time.
        self.shape_classes = sorted(per_class)
        shapes: Optional[dict] = {}
        if fed.rank == 0 and cfg.augment in ("ggeur", "isotropic"):
            boost = cfg.boost_which if cfg.mode == "multi_domain" else "none"
            shapes = {
                c: GeometricShape.from_covariance(self.pooled_cov[c].numpy(), boost, cfg.boost_k, cfg.boost_max)
                for c in sorted(per_class)
            }
        self.shapes = fed.broadcast_object(shapes)

    def _warn_degenerate_shapes(self, pooled_rows: dict[int, int]) -> None:
        """A shape pooled from one row has zero covariance: every row drawn along it is a copy of a real row.
        Legal input (a rare class), but the "augmentation" then only oversamples, so say so."""
        if self.config.augment not in ("ggeur", "isotropic"):
            return
        single = sorted(c for c, n in pooled_rows.items() if n < 2)
        if single:
            warnings.warn(
                f"class(es) {single[:10]}{' …' if len(single) > 10 else ''} have a single row in their global "
                f"shape (the rows pooled from the guide clients), so their covariance is zero and every row "
                f"generated for them repeats a real row exactly (e.g. a target of 50 rows gives 50 identical "
                f"rows). Collect more rows of these classes, or compare with GGEURConfig(augment='oversample').",
                UserWarning,
                stacklevel=4,  # this helper → statistics_round → fit → the caller
            )

    def _needs_moments(self) -> bool:
        """Whether this run reads the pooled second moments (the global shapes) or the domain prototypes.

        The equal-count controls ("none", "oversample", and "local_cov" in single-domain mode) only need
        each class's global row count; skipping the d×d moments, their pickled size check and the
        eigendecompositions makes them several times cheaper at d = 1280, and changes none of their rows.
        """
        return self.config.augment in ("ggeur", "isotropic") or (
            self.config.mode == "multi_domain" and self.config.augment == "local_cov"
        )

    def _counts_only_round(self, fed: FederatedTrainer, parts: Partitions, all_clients: list[int]) -> None:
        counts = []
        for k in fed.hosted(all_clients):
            y = np.asarray(parts.client_dataset(k)[self.label_col], dtype=np.int64)
            vals, cnt = np.unique(y, return_counts=True)
            counts.append((k, {int(c): int(n) for c, n in zip(vals, cnt)}))
        per_class: dict[int, int] = {}
        for _, cnt in fed.gather_objects(counts):
            for c, n in cnt.items():
                per_class[c] = per_class.get(c, 0) + n
        self.class_counts = dict(sorted(per_class.items()))
        self.shape_classes = sorted(per_class)
        self.shapes, self.prototypes = {}, {}

    def _dim(self, parts: Partitions) -> int:
        return len(parts.dataset[0][self.emb_col])

    # ------------------------------------------------------------------ augmentation of one client
    def augment_client(self, parts: Partitions, k: int) -> AugmentedSet:
        """Client ``k``'s real rows plus its synthetic ones (seeded by (run seed, client))."""
        cfg = self.config
        z, y = self.client_arrays(parts, k)
        rng = np.random.default_rng(derived_seed(cfg.seed, k, 11))
        shapes = self.shapes
        if cfg.augment == "none":
            return AugmentedSet(z, y, np.zeros(len(y), bool))
        if cfg.augment == "isotropic":
            # Same trace as the global covariance, no direction: removes the geometry, keeps the energy.
            shapes = {c: isotropic_shape(s.dim, float(s.eigenvalues.sum())) for c, s in self.shapes.items()}
        elif cfg.augment == "local_cov":
            shapes = {}
            for c in np.unique(y):
                zc = z[y == c]
                shapes[int(c)] = GeometricShape.from_covariance(
                    np.cov(zc, rowvar=False, bias=True) if len(zc) > 1 else np.zeros((z.shape[1], z.shape[1]))
                )
        if cfg.mode == "single_domain":
            target = cfg.target_per_class if cfg.target_per_class is not None else self.class_counts
            if cfg.augment == "oversample":
                out = augment_single_domain(
                    z,
                    y,
                    {c: isotropic_shape(z.shape[1], 0.0) for c in self.shape_classes},
                    target,
                    rng,
                    num_classes=self.num_classes,
                    per_sample=cfg.per_sample,
                )
            else:
                out = augment_single_domain(
                    z, y, shapes, target, rng, scale=cfg.scale, num_classes=self.num_classes, per_sample=cfg.per_sample
                )
        elif cfg.augment == "oversample":
            # The equal-count control of the multi-domain rule: every held class resampled from the client's
            # own real rows up to the same per-class target, with no cross-domain prototype and no noise.
            zero = {c: isotropic_shape(z.shape[1], 0.0) for c in self.shape_classes}
            out = augment_single_domain(
                z, y, zero, cfg.target_per_class or 2000, rng, num_classes=self.num_classes, per_sample=cfg.per_sample
            )
        else:
            mine = parts.client_domains[k] if parts.client_domains else None
            protos: dict[int, list[np.ndarray]] = {}
            for d, by_class in sorted(self.prototypes.items()):
                if d == mine:
                    continue
                for c, mu in by_class.items():
                    protos.setdefault(c, []).append(mu)
            out = augment_multi_domain(
                z,
                y,
                shapes,
                protos,
                rng,
                scale=cfg.scale,
                num_per_sample=cfg.num_per_sample,
                step1_keep=cfg.step1_keep,
                prototype_draws=cfg.prototype_draws,
                target_per_class=cfg.target_per_class or 2000,
                classes=self.shape_classes,
                official=cfg.compat == "official",
            )
        if cfg.normalize and out.synthetic.any():
            out.embeddings[out.synthetic] = _l2(out.embeddings[out.synthetic])
        return out

    # ------------------------------------------------------------------ fit
    def head_client(self, dim: int, num_classes: int) -> HeadClientTrainer:
        """The seeded linear head and its client trainer (the same initial head for every engine)."""
        torch.manual_seed(self.config.seed)
        head = nn.Linear(dim, num_classes)
        return HeadClientTrainer(
            head,
            self.config.compat == "official",
            lr=self.config.lr,
            batch_size=self.config.batch_size,
            optimizer="adam",
            input_column="x",
            label_column="label",
        )

    def fit(self, partitions: Partitions, resume_from: Optional[str] = None) -> list[dict]:
        """Run the statistics round, then the federated rounds of the head; returns the round history."""
        if partitions.dataset is None:
            raise HFTrustConfigError(
                "the partitions hold no dataset; split the embedding dataset with a partitioner (not a label list)."
            )
        cols = partitions.dataset.column_names
        for col in (self.emb_col, self.label_col):
            if col not in cols:
                raise HFTrustDataError(f"column {col!r} not found in the embedding dataset (columns: {cols}).")
        if self.config.mode == "multi_domain" and not partitions.client_domains:
            raise HFTrustConfigError(
                "multi_domain mode needs domain partitions (DomainPartitioner) so clients know their domain."
            )
        check_federation(self.config, self.fed_config, self.strategy)
        self._validate(partitions)
        labels = np.asarray(partitions.dataset[self.label_col])
        self.num_classes = self.config.num_classes or int(labels.max()) + 1
        client = self.head_client(self._dim(partitions), self.num_classes)
        fed_cfg = self.fed_config
        evals = {name: self.eval_dict(ds) for name, ds in self.eval_datasets.items()}
        fed = FederatedTrainer(client, self.strategy, fed_cfg, eval_datasets=evals, accelerator=self.accelerator)
        self.federation = fed
        self.statistics_round(fed, partitions)
        self.partitions = _AugmentedPartitions(partitions, lambda k: self.augment_client(partitions, k))
        history = fed.fit(self.partitions, resume_from=resume_from)
        if not self.config.keep_augmented:
            # The augmented rows of every client can be large (clients × classes × target × d); the partitions
            # also hold a reference back to this trainer, so without this they would live until a gc cycle.
            self.partitions.release()
        return history

    @property
    def head(self) -> nn.Module:
        if self.federation is None:
            raise HFTrustStateError("call fit() first.")
        return self.federation.client_trainer.model
