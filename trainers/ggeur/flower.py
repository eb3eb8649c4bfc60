"""GGEUR on Flower (``pip install "hf-trust[flower]"``): the statistics round is a Flower round whose payload is the per-class statistics only.

Protocol (all Flower messages between the ServerApp and the SuperNodes):

1. ``query.hf_trust`` / ``ggeur_statistics``: every client replies with one ``ArrayRecord`` holding, per class it
   holds, ``class-<c>/first`` (d,) and ``class-<c>/second`` (d, d) float64 arrays (``(Σz, Σzzᵀ)`` or ``(μ, Σ)``),
   a ``MetricRecord`` of the per-class counts and a ``ConfigRecord`` naming the client (partition id, dimension,
   form, domain).  Nothing else: the server re-validates every reply with ``check_statistics_only``.
2. The server pools exactly as :meth:`GGEURTrainer.statistics_round` (guide sets, float64 sums in client order,
   the same eigen-decompositions), so the pooled covariance equals the in-process one.
3. ``query.hf_trust`` / ``ggeur_shapes``: the global shapes (eigenvalues, eigenvectors), the per-domain class
   prototypes and the global class counts go to every client, which keeps them in its Flower ``Context``.
4. Ordinary rounds of the chosen strategy train the linear head on each client's real + augmented embeddings; the
   augmentation is drawn on the client from (run seed, client) exactly as in-process, regenerated where needed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from torch import nn

from hf_trust.errors import FederationError, HFTrustDataError, HFTrustStateError

from ..federated import FederatedConfig, Partitions
from ..federated.flower import FlowerFederation
from ..federated.flower._records import CLIENT_RECORD_KEY, JOB_KEY, array_bytes, client_record
from ..federated.flower.client import ACTION_KEY, QUERY_ACTION, ClientRuntime, DataSource, partition_id
from ..federated.flower.strategy import reply_partition
from ..federated.stats import ClassMoments
from .config import GGEURConfig, check_federation
from .geometry import GeometricShape
from .statistics import ClassStatistics, ClientStatistics, check_statistics_only, client_statistics, guide_set
from .trainer import GGEURTrainer

STATS_KEY, COUNTS_KEY = "ggeur-statistics", "ggeur-counts"
SHAPES_KEY, GLOBAL_COUNTS_KEY, META_KEY = "ggeur-shapes", "ggeur-class-counts", "ggeur-meta"


# ---------------------------------------------------------------------- wire format of the statistics round
def statistics_to_records(payload: ClientStatistics) -> RecordDict:
    """One client's statistics as Flower records (and nothing else)."""
    check_statistics_only(payload)
    arrays = ArrayRecord()
    counts = MetricRecord()
    for c, s in sorted(payload.classes.items()):
        arrays[f"class-{c}/first"] = Array(np.ascontiguousarray(s.first, dtype=np.float64))
        arrays[f"class-{c}/second"] = Array(np.ascontiguousarray(s.second, dtype=np.float64))
        counts[f"class-{c}"] = int(s.n)
    form = next(iter(payload.classes.values())).form if payload.classes else "moments"
    meta = client_record(payload.client_id, dim=int(payload.dim), form=str(form), domain=payload.domain or "")
    return RecordDict({STATS_KEY: arrays, COUNTS_KEY: counts, CLIENT_RECORD_KEY: meta})


def statistics_from_records(content: RecordDict) -> ClientStatistics:
    """The server side of :func:`statistics_to_records`; refuses any record or array that is not a statistic."""
    allowed = {STATS_KEY, COUNTS_KEY, CLIENT_RECORD_KEY}
    extra = set(content.keys()) - allowed
    if extra:
        raise HFTrustDataError(f"a GGEUR statistics reply carries {sorted(extra)}, which are not statistics.")
    meta = content.config_records[CLIENT_RECORD_KEY]
    d = int(meta["dim"])
    form = str(meta["form"])
    arrays = content.array_records[STATS_KEY]
    counts = content.metric_records[COUNTS_KEY]
    out = ClientStatistics(client_id=int(meta["partition-id"]), dim=d, domain=str(meta["domain"]) or None)
    expected = {f"class-{c.split('-', 1)[1]}/{part}" for c in counts for part in ("first", "second")}
    if set(arrays.keys()) != expected:
        raise HFTrustDataError(f"statistics arrays {sorted(arrays.keys())[:4]}... do not match the class counts.")
    for key, n in counts.items():
        c = int(key.split("-", 1)[1])
        out.classes[c] = ClassStatistics(
            int(n),
            arrays[f"class-{c}/first"].numpy(),
            arrays[f"class-{c}/second"].numpy(),
            form=form,  # type: ignore[arg-type]
        )
    check_statistics_only(out)
    return out


class _PartsShim:
    """What ``GGEURTrainer.augment_client`` reads from a partition, for one client of a SuperNode."""

    def __init__(self, k: int, dataset: Any, domain: Optional[str]):
        self._k, self._ds = k, dataset
        self.client_domains = None if domain is None else {k: domain}

    def client_dataset(self, k: int) -> Any:
        return self._ds


# ---------------------------------------------------------------------- the client side
class GGEURClientRuntime(ClientRuntime):
    """A SuperNode of GGEUR: answers the statistics round, keeps the global shapes in its ``Context`` and trains
    the head on its real + augmented embeddings (cached per process, regenerated from the seed when evicted)."""

    def __init__(self, ggeur: GGEURTrainer, *args: Any, augment_cache_size: Optional[int] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ggeur = ggeur
        self.augment_cache_size = augment_cache_size
        self._cache: OrderedDict[tuple, dict] = OrderedDict()
        self._current: Optional[dict] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state

    def _domain(self, k: int, context: Context) -> Optional[str]:
        if isinstance(self.data, Partitions):
            return self.data.client_domains[k] if self.data.client_domains else None
        dom = context.node_config.get("domain")
        return str(dom) if dom is not None else None

    def _raw(self, k: int, context: Context) -> Any:
        return self._resolve(self.data, k, context)

    def local_rows(self, k: int, context: Context) -> int:
        return len(self._raw(k, context))

    def query(self, action: str, msg: Message, context: Context, cfg: dict) -> Message:
        k = partition_id(context)
        g = self.ggeur
        if action == "ggeur_statistics":
            z, y = g.client_arrays(_PartsShim(k, self._raw(k, context), None), k)  # type: ignore[arg-type]
            payload = client_statistics(z, y, client_id=k, form=g.config.stats_form, domain=self._domain(k, context))
            return Message(statistics_to_records(payload), reply_to=msg)
        if action == "ggeur_shapes":
            job = str(cfg.get(JOB_KEY, ""))
            for key in (SHAPES_KEY, GLOBAL_COUNTS_KEY, META_KEY):
                context.state[f"{key}/{job}"] = msg.content[key]
            aug = self.augmented(k, context, cfg)
            rec = client_record(k, **{"augmented-rows": int(len(aug["label"])), "real-rows": int(aug["real"])})
            return Message(RecordDict({CLIENT_RECORD_KEY: rec}), reply_to=msg)
        return super().query(action, msg, context, cfg)

    def _load_global(self, context: Context, job: str) -> None:
        g = self.ggeur
        try:
            arrays = context.state[f"{SHAPES_KEY}/{job}"]
            counts = context.state[f"{GLOBAL_COUNTS_KEY}/{job}"]
            meta = context.state[f"{META_KEY}/{job}"]
        except KeyError:
            raise HFTrustStateError(
                "this SuperNode has no GGEUR shapes yet; the statistics round must run first."
            ) from None
        g.num_classes = int(meta["num-classes"])
        classes = sorted({int(key.split("/")[0].split("-")[1]) for key in arrays.keys() if key.startswith("class-")})
        g.shapes = {
            c: GeometricShape(arrays[f"class-{c}/eigenvalues"].numpy(), arrays[f"class-{c}/eigenvectors"].numpy())
            for c in classes
        }
        g.class_counts = {int(key.split("-")[1]): int(v) for key, v in counts.items()}
        protos: dict[str, dict[int, np.ndarray]] = {}
        for key in arrays.keys():
            if key.startswith("proto/"):
                _, dom, cls = key.split("/")
                protos.setdefault(dom, {})[int(cls.split("-")[1])] = arrays[key].numpy()
        g.prototypes = protos

    def augmented(self, k: int, context: Context, cfg: dict) -> dict:
        job = str(cfg.get(JOB_KEY, ""))
        key = (job, k)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        self._load_global(context, job)
        aug = self.ggeur.augment_client(_PartsShim(k, self._raw(k, context), self._domain(k, context)), k)  # type: ignore[arg-type]
        out = {
            "x": torch.as_tensor(aug.embeddings.astype(np.float32)),
            "label": torch.as_tensor(aug.labels),
            "real": int((~aug.synthetic).sum()),
        }
        self._cache[key] = out
        while self.augment_cache_size is not None and len(self._cache) > self.augment_cache_size:
            self._cache.popitem(last=False)
        return out

    def dataset(self, k: int, context: Context) -> Any:
        """The client's training set of the current message: its real + augmented embeddings."""
        return self._current

    def _train(self, msg: Message, context: Context, cfg: dict) -> Message:
        aug = self.augmented(partition_id(context), context, cfg)
        self._current = {"x": aug["x"], "label": aug["label"]}
        try:
            return super()._train(msg, context, cfg)
        finally:
            self._current = None

    def evaluate(self, msg: Message, context: Context, cfg: dict) -> Message:
        aug = self.augmented(partition_id(context), context, cfg)
        self._current = {"x": aug["x"], "label": aug["label"]}
        try:
            return super().evaluate(msg, context, cfg)
        finally:
            self._current = None

    def eval_dataset(self, k: int, context: Context) -> Any:
        if self.eval_data is not None:
            return self.ggeur.eval_dict(self._resolve(self.eval_data, k, context))
        return self._current


# ---------------------------------------------------------------------- the federation
class FlowerGGEUR(FlowerFederation):
    """GGEUR (statistics round → global shapes → local augmentation → federated head) on Flower.

    Args:
        config: :class:`GGEURConfig` (the method's options and the head's optimiser).
        strategy: a Flower strategy or a core one, as for :class:`FlowerFederation`.
        fed_config: rounds, local epochs (``GGEURConfig.local_epochs``, when set, must equal them), seed,
            client fraction.
        dim / num_classes: the embedding width and class count (see :meth:`from_partitions`).
        eval_datasets: name → embedding dataset evaluated on the server every round.
        augment_cache_size: augmented client sets kept per process (``None``: all).
        kwargs: the other :class:`FlowerFederation` options.
    """

    def __init__(
        self,
        config: GGEURConfig,
        strategy: Any = None,
        fed_config: Optional[FederatedConfig] = None,
        eval_datasets: Optional[dict[str, Any]] = None,
        *,
        dim: int,
        num_classes: int,
        embedding_column: str = "embedding",
        label_column: str = "label",
        domain_column: str = "domain",
        augment_cache_size: Optional[int] = None,
        **kwargs: Any,
    ):
        fed_config = fed_config or FederatedConfig()
        check_federation(config, fed_config, strategy)
        self.ggeur = GGEURTrainer(
            config,
            strategy=None,  # type: ignore[arg-type]
            fed_config=fed_config,
            embedding_column=embedding_column,
            label_column=label_column,
            domain_column=domain_column,
        )
        self.ggeur.num_classes = num_classes
        client = self.ggeur.head_client(dim, num_classes)  # GGEURTrainer.fit's head initialisation
        evals = {name: self.ggeur.eval_dict(ds) for name, ds in (eval_datasets or {}).items()}
        super().__init__(client, strategy, fed_config, evals, **kwargs)
        self.ggeur_config = config
        self.augment_cache_size = augment_cache_size
        self.dim, self.num_classes = dim, num_classes
        self.shapes: dict[int, GeometricShape] = {}
        self.class_counts: dict[int, int] = {}
        self.prototypes: dict[str, dict[int, np.ndarray]] = {}
        self.payload_bytes: list[int] = []
        self.statistics_wire: list[RecordDict] = []
        self.protocol_history: list[dict[str, Any]] = []

    @classmethod
    def from_partitions(cls, partitions: Partitions, config: GGEURConfig, *args: Any, **kwargs: Any) -> FlowerGGEUR:
        """Take ``dim`` and ``num_classes`` from the partitioned embedding dataset, as ``GGEURTrainer.fit`` does."""
        emb = kwargs.get("embedding_column", "embedding")
        lab = kwargs.get("label_column", "label")
        if partitions.dataset is None:
            raise HFTrustDataError("the partitions hold no dataset; split the embedding dataset with a partitioner.")
        labels = np.asarray(partitions.dataset[lab])
        num_classes = config.num_classes or int(labels.max()) + 1
        dim = len(partitions.dataset[0][emb])
        return cls(config, *args, dim=dim, num_classes=num_classes, **kwargs)

    def client_runtime(self, data: DataSource) -> ClientRuntime:
        if self.ggeur_config.mode == "multi_domain" and isinstance(data, Partitions) and not data.client_domains:
            raise HFTrustDataError(
                "multi_domain mode needs domain partitions (DomainPartitioner) so clients know their domain."
            )
        return GGEURClientRuntime(
            self.ggeur,
            self.client_trainer,
            data,
            self.config,
            **self.runtime_options(),
            augment_cache_size=self.augment_cache_size,
        )

    # ------------------------------------------------------------------ the server's protocol rounds
    def _query(self, grid: Grid, job: str, action: str, extra: Optional[dict] = None) -> list[Message]:
        nodes = [self.nodes[k] for k in sorted(self.nodes)]
        msgs = []
        for n in nodes:
            content = RecordDict({"config": ConfigRecord({JOB_KEY: job, ACTION_KEY: action})})
            for key, rec in (extra or {}).items():
                content[key] = rec
            msgs.append(Message(content, dst_node_id=n, message_type=f"{MessageType.QUERY}.{QUERY_ACTION}"))
        replies = list(grid.send_and_receive(msgs, timeout=self.round_timeout))
        failed = [m for m in replies if m.has_error()]
        if failed or len(replies) < len(nodes):
            reasons = "; ".join(m.error.reason for m in failed)
            raise FederationError(
                f"GGEUR {action}: {len(replies) - len(failed)} of {len(nodes)} clients answered ({reasons or 'timeout'})."
            )
        return sorted(replies, key=lambda m: reply_partition(m) or 0)

    def before_rounds(self, grid: Grid, job: str) -> None:
        replies = self._query(grid, job, "ggeur_statistics")
        if self.record_client_params:
            self.statistics_wire = [m.content for m in replies]
        payloads = [statistics_from_records(m.content) for m in replies]
        self.payload_bytes = [check_statistics_only(p) for p in payloads]
        up = sum(array_bytes(a) for m in replies for a in m.content.array_records.values())
        self.pool(payloads)
        # the global shapes (and multi-domain prototypes) to every client
        arrays = ArrayRecord()
        for c, s in sorted(self.shapes.items()):
            arrays[f"class-{c}/eigenvalues"] = Array(np.ascontiguousarray(s.eigenvalues))
            arrays[f"class-{c}/eigenvectors"] = Array(np.ascontiguousarray(s.eigenvectors))
        for dom, by_class in sorted(self.prototypes.items()):
            for c, mu in sorted(by_class.items()):
                arrays[f"proto/{dom}/class-{c}"] = Array(np.ascontiguousarray(mu, dtype=np.float64))
        counts = MetricRecord({f"class-{c}": int(n) for c, n in sorted(self.class_counts.items())})
        meta = ConfigRecord({"num-classes": int(self.num_classes)})
        shape_replies = self._query(
            grid, job, "ggeur_shapes", {SHAPES_KEY: arrays, GLOBAL_COUNTS_KEY: counts, META_KEY: meta}
        )
        down = array_bytes(arrays) * len(shape_replies)
        sizes = {reply_partition(m): dict(m.content.config_records[CLIENT_RECORD_KEY]) for m in shape_replies}
        self.protocol_history = [
            {"phase": "statistics", "clients": sorted(self.nodes), "payload_bytes_up": up},
            {
                "phase": "shapes",
                "payload_bytes_down": down,
                "augmented_rows": {k: v.get("augmented-rows") for k, v in sorted(sizes.items())},
            },
        ]

    def pool(self, payloads: list[ClientStatistics]) -> None:
        """Exactly ``GGEURTrainer.statistics_round``'s pooling for one process holding every client's payload."""
        cfg = self.ggeur_config
        payloads = sorted(payloads, key=lambda p: p.client_id)
        per_class: dict[int, dict[int, int]] = {}
        for p in payloads:
            for c, n in p.counts().items():
                per_class.setdefault(c, {})[p.client_id] = n
        threshold = cfg.guide_threshold if cfg.mode == "single_domain" else None
        guides = {c: set(guide_set(cnt, threshold)) for c, cnt in per_class.items()}
        self.class_counts = {c: int(sum(cnt.values())) for c, cnt in per_class.items()}
        num_classes = self.num_classes
        dim = payloads[0].dim if payloads else self.dim
        local = ClassMoments.zeros(num_classes, dim)
        domains = sorted({p.domain for p in payloads if p.domain is not None})
        dom_s0 = torch.zeros(len(domains), num_classes, dtype=torch.float64)
        dom_s1 = torch.zeros(len(domains), num_classes, dim, dtype=torch.float64)
        for p in payloads:
            for c, msg in p.classes.items():
                s0, s1, s2 = msg.moments()
                if p.client_id in guides[c]:
                    local.s0[c] += s0
                    local.s1[c] += torch.from_numpy(s1)
                    local.s2[c] += torch.from_numpy(s2)
                if domains and p.domain is not None:
                    d = domains.index(p.domain)
                    dom_s0[d, c] += s0
                    dom_s1[d, c] += torch.from_numpy(s1)
        self.pooled_mean, self.pooled_cov = local.pooled()
        if domains:
            self.prototypes = {
                d: {c: (dom_s1[i, c] / dom_s0[i, c]).numpy() for c in range(num_classes) if dom_s0[i, c] > 0}
                for i, d in enumerate(domains)
            }
        boost = cfg.boost_which if cfg.mode == "multi_domain" else "none"
        self.shapes = {
            c: GeometricShape.from_covariance(self.pooled_cov[c].numpy(), boost, cfg.boost_k, cfg.boost_max)
            for c in sorted(per_class)
        }

    @property
    def head(self) -> nn.Module:
        return self.client_trainer.model
