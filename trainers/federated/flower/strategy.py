"""Our strategies on Flower: :class:`HFTrustStrategy` is a Flower strategy (a ``FedAvg`` subclass, so Flower's
wrappers such as the differential-privacy ones accept it) that aggregates exactly as :class:`FederatedTrainer`:
clients in partition order, ``Strategy.client_weight`` weights, a float64 weighted mean, then
``Strategy.server_update`` (FedOpt's server step).  Sampling follows ``FederatedConfig`` (``sample_clients``)
once the ServerApp has told it which node hosts which partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import Strategy as FlowerStrategy

from hf_trust.errors import FederationError, HFTrustConfigError

from ..strategy import FedProx, Strategy
from ..trainer import FederatedConfig, sample_clients
from ._records import CLIENT_RECORD_KEY


def reply_partition(msg: Message) -> Optional[int]:
    """The partition id an hf-trust client wrote into its reply (``None`` for other clients)."""
    rec = msg.content.config_records.get(CLIENT_RECORD_KEY) if msg.has_content() else None
    return int(rec["partition-id"]) if rec is not None and "partition-id" in rec else None


class HFTrustStrategy(FlowerFedAvg):
    """A core :class:`Strategy` (``FedAvg``, ``FedProx``, ``FedOpt``/``FedAdam`` or a subclass) as a Flower strategy.

    Args:
        strategy: the core strategy.
        config: its :class:`FederatedConfig` (client fraction and sampling rule, seed).
        fraction_evaluate: share of clients asked to evaluate the global model on their local data each round
            (0: only the server-side evaluation of ``eval_datasets``, as the in-process engine does).
    """

    def __init__(self, strategy: Strategy, config: Optional[FederatedConfig] = None, fraction_evaluate: float = 0.0):
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a core Strategy, got {type(strategy).__name__}.")
        self.inner = strategy
        self.config = config or FederatedConfig()
        super().__init__(
            fraction_train=self.config.client_fraction,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=1,
            min_evaluate_nodes=1 if fraction_evaluate > 0 else 0,
            min_available_nodes=1,
        )
        #: partition id → node id, set by the ServerApp's handshake; ``None``: Flower's own sampling.
        self.partition_nodes: Optional[dict[int, int]] = None
        self._current: Optional[dict[str, np.ndarray]] = None

    def __repr__(self) -> str:
        return f"HFTrustStrategy({self.inner!r})"

    def summary(self) -> None:
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._current = {k: a.numpy() for k, a in arrays.items()}
        if isinstance(self.inner, FedProx):
            config["proximal-mu"] = float(self.inner.mu)  # a deployed client without our object still adds the term
        if self.partition_nodes is None:
            return super().configure_train(server_round, arrays, config, grid)
        config["server-round"] = server_round
        clients = sample_clients(len(self.partition_nodes), self.config, server_round - 1)
        node_ids = [self.partition_nodes[k] for k in clients]
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        valid, _ = self._check_and_log_replies(list(replies), is_train=True)
        if not valid:
            return None, None
        if self._current is None:
            raise HFTrustConfigError("aggregate_train before configure_train: the global arrays are unknown.")
        # FederatedTrainer's order: clients sorted by id, float64 sums, one division
        valid = sorted(valid, key=lambda m: (reply_partition(m) is None, reply_partition(m) or 0))
        sums = {k: np.zeros(v.shape, dtype=np.float64) for k, v in self._current.items()}
        total = 0.0
        for msg in valid:
            arrays = next(iter(msg.content.array_records.values()))
            metrics = next(iter(msg.content.metric_records.values()))
            w = float(self.inner.client_weight(int(metrics["num-examples"])))
            for k in sums:
                sums[k] += arrays[k].numpy().astype(np.float64) * w
            total += w
        if total <= 0:
            return None, None
        glob = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in self._current.items()}
        mean = {k: torch.from_numpy(sums[k] / total).to(glob[k].dtype) for k in sums}
        new = self.inner.server_update(glob, mean)
        # checked like the clients' updates, and blamed on the strategy (as FederatedTrainer does): a NaN global
        # model would reach every client next round and each of their updates would be rejected in turn
        bad = [k for k in self._current if k not in new or not torch.isfinite(new[k]).all()]
        if bad:
            mean_ok = all(torch.isfinite(mean[k]).all() for k in mean)
            raise FederationError(
                f"the server step of strategy {self.inner!r} ({type(self.inner).__name__}.server_update) returned "
                f"missing or non-finite values in {bad[:3]} in round {server_round}; the clients' weighted mean it "
                f"was given was {'finite' if mean_ok else 'already non-finite'}. Fix the strategy's server_update "
                f"(e.g. lower FedOpt's server_lr or raise its tau)."
            )
        out = ArrayRecord({k: Array(np.ascontiguousarray(new[k].detach().cpu().numpy())) for k in self._current})
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return out, metrics

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict()}


def as_flower_strategy(strategy: Any, config: Optional[FederatedConfig] = None) -> FlowerStrategy:
    """A Flower strategy as is, or one of ours wrapped in :class:`HFTrustStrategy`."""
    if strategy is None:
        from ..strategy import FedAvg

        return HFTrustStrategy(FedAvg(), config)
    if isinstance(strategy, FlowerStrategy):
        return strategy
    if isinstance(strategy, Strategy):
        return HFTrustStrategy(strategy, config)
    raise TypeError(
        "strategy must be a Flower strategy (flwr.serverapp.strategy.FedAvg(), Krum(), ...) or an hf-trust "
        f"strategy (hf_trust.trainers.federated.FedAvg(), FedProx(...), ...); got {type(strategy).__name__}."
    )
