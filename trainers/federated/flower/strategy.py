"""Our strategies on Flower: :class:`HFTrustStrategy` is a Flower strategy (a ``FedAvg`` subclass, so Flower's
wrappers such as the differential-privacy ones accept it) that aggregates through the federated core's round
steps (:mod:`..rounds`): clients in partition order, ``Strategy.client_weight`` weights, the float64
:class:`~..rounds.WeightedSums`, then the checked :func:`~..rounds.server_step`.  Sampling follows
``FederatedConfig`` (:func:`~..rounds.sample_clients`) over the ServerApp's partition-ordered grid.

The core strategy object travels end to end: ``HFTrustStrategy.strategy`` is the very object the caller passed,
and :func:`client_strategy` hands it to the clients for its loss term.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Optional

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping as _DPClient
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping as _DPServer
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import FedProx as FlowerFedProx
from flwr.serverapp.strategy import Strategy as FlowerStrategy
from flwr.serverapp.strategy.fedopt import FedOpt as FlowerFedOpt

from hf_trust.errors import FederationTimeout, HFTrustStateError, HFTrustTypeError

from ..rounds import WeightedSums, sample_clients, server_step
from ..strategy import FedAvg, FedProx, Strategy
from ..trainer import FederatedConfig
from ._records import CLIENT_RECORD_KEY, NUM_EXAMPLES_KEY

try:  # Flower's adaptive-clipping wrappers (same `.strategy` contract as the fixed-clipping ones)
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideAdaptiveClipping as _DPAClient
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping as _DPAServer

    _WRAPPERS: tuple[type, ...] = (_DPClient, _DPServer, _DPAClient, _DPAServer)
except ImportError:  # pragma: no cover - older flwr
    _WRAPPERS = (_DPClient, _DPServer)


def reply_partition(msg: Message) -> Optional[int]:
    """The partition id an hf-trust client wrote into its reply (``None`` for other clients)."""
    rec = msg.content.config_records.get(CLIENT_RECORD_KEY) if msg.has_content() else None
    return int(rec["partition-id"]) if rec is not None and "partition-id" in rec else None


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: Optional[float], poll: float) -> list[Message]:
    """Flower's ``Grid.send_and_receive`` with our poll interval: push ``messages``, then pull replies every ``poll``
    seconds until all have come or ``timeout`` passes (``None``: no bound).  The deployment grid's own loop sleeps
    3 s between polls, a floor on every round that this removes."""
    pending = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies += got
        pending -= {m.metadata.reply_to_message_id for m in got}
        if not pending or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(poll)
    return replies


def wrapped_strategy(strategy: FlowerStrategy) -> FlowerStrategy:
    """The strategy a Flower differential-privacy wrapper aggregates with (the strategy itself otherwise)."""
    while isinstance(strategy, _WRAPPERS):
        strategy = strategy.strategy
    return strategy


class PartitionGrid:
    """The ServerApp's grid seen in partition order: ``get_node_ids`` lists the live nodes by partition id, so that
    a strategy's seeded sampling picks the same clients in every run (node ids are random per run), and
    ``partition_nodes`` maps partition id → node id for :class:`HFTrustStrategy`.  Everything else is the grid.

    Between :meth:`begin_wait` and :meth:`end_wait` a call to ``get_node_ids`` past the deadline raises
    :class:`~hf_trust.errors.FederationTimeout` naming the partitions whose SuperNodes are gone: Flower's
    strategies otherwise wait without end for ``min_available_nodes``.  ``send_and_receive`` polls for replies
    every ``poll`` seconds (:func:`send_and_receive`)."""

    def __init__(self, grid: Grid, partition_nodes: dict[int, int], poll: float = 0.1):
        self._grid = grid
        self.partition_nodes = dict(partition_nodes)
        self.poll = poll
        self._deadline: Optional[float] = None
        self._timeout = 0.0

    def begin_wait(self, timeout: Optional[float]) -> None:
        self._timeout = float(timeout or 0.0)
        self._deadline = time.monotonic() + self._timeout if timeout else None

    def end_wait(self) -> None:
        self._deadline = None

    def missing_partitions(self) -> list[int]:
        live = set(self._grid.get_node_ids())
        return [k for k, n in sorted(self.partition_nodes.items()) if n not in live]

    def get_node_ids(self) -> list[int]:
        live = set(self._grid.get_node_ids())
        if self._deadline is not None and time.monotonic() > self._deadline:
            missing = [k for k, n in sorted(self.partition_nodes.items()) if n not in live]
            raise FederationTimeout(
                f"the strategy waited {self._timeout:.0f} s (node-timeout) for SuperNodes to connect; "
                f"{len(live)} connected, the SuperNodes of partitions {missing} are gone."
            )
        return [self.partition_nodes[k] for k in sorted(self.partition_nodes) if self.partition_nodes[k] in live]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: Optional[float] = None) -> list[Message]:
        return send_and_receive(self._grid, messages, timeout, self.poll)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class HFTrustStrategy(FlowerFedAvg):
    """A core :class:`Strategy` (``FedAvg``, ``FedProx``, ``FedOpt``/``FedAdam`` or a subclass) as a Flower strategy.

    Args:
        strategy: the core strategy (kept as ``self.strategy``, the same object).
        config: its :class:`FederatedConfig` (client fraction and sampling rule, seed).
        fraction_evaluate: share of clients asked to evaluate the global model on their local data each round
            (0: only the server-side evaluation of ``eval_datasets``, as the in-process engine does).
    """

    def __init__(self, strategy: Strategy, config: Optional[FederatedConfig] = None, fraction_evaluate: float = 0.0):
        if not isinstance(strategy, Strategy):
            raise HFTrustTypeError(f"strategy must be a core Strategy, got {type(strategy).__name__}.")
        self.config = config or FederatedConfig()
        super().__init__(
            fraction_train=self.config.client_fraction,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=1,
            min_evaluate_nodes=1 if fraction_evaluate > 0 else 0,
            min_available_nodes=1,
            weighted_by_key=NUM_EXAMPLES_KEY,
        )
        self.strategy = strategy
        self._current: Optional[dict[str, np.ndarray]] = None

    def __repr__(self) -> str:
        return f"HFTrustStrategy({self.strategy!r})"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._current = {k: a.numpy() for k, a in arrays.items()}
        if not isinstance(grid, PartitionGrid):  # outside an hf-trust ServerApp: Flower's own sampling
            return super().configure_train(server_round, arrays, config, grid)
        config["server-round"] = server_round
        clients = sample_clients(len(grid.partition_nodes), self.config, server_round - 1)
        node_ids = [grid.partition_nodes[k] for k in clients]
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        valid, _ = self._check_and_log_replies(list(replies), is_train=True)
        if not valid:
            return None, None
        if self._current is None:
            raise HFTrustStateError("aggregate_train before configure_train: the global arrays are unknown.")
        # FederatedTrainer's order: clients sorted by id, then the core's float64 sums and checked server step
        valid = sorted(valid, key=lambda m: (reply_partition(m) is None, reply_partition(m) or 0))
        glob = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in self._current.items()}
        sums = WeightedSums(glob)
        for msg in valid:
            arrays = next(iter(msg.content.array_records.values()))
            metrics = next(iter(msg.content.metric_records.values()))
            w = float(self.strategy.client_weight(int(metrics[NUM_EXAMPLES_KEY])))
            sums.add({k: torch.from_numpy(arrays[k].numpy()) for k in sums.keys}, w)
        mean, _ = sums.mean()
        if mean is None:
            return None, None
        new = server_step(self.strategy, glob, mean, server_round - 1)
        out = ArrayRecord({k: Array(np.ascontiguousarray(new[k].detach().cpu().numpy())) for k in self._current})
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return out, metrics


def as_flower_strategy(strategy: Any, config: Optional[FederatedConfig] = None) -> FlowerStrategy:
    """A Flower strategy as is, or one of ours wrapped in :class:`HFTrustStrategy`."""
    if strategy is None:
        return HFTrustStrategy(FedAvg(), config)
    if isinstance(strategy, FlowerStrategy):
        return strategy
    if isinstance(strategy, Strategy):
        return HFTrustStrategy(strategy, config)
    raise HFTrustTypeError(
        "strategy must be a Flower strategy (flwr.serverapp.strategy.FedAvg(), Krum(), ...) or an hf-trust "
        f"strategy (hf_trust.trainers.federated.FedAvg(), FedProx(...), ...); got {type(strategy).__name__}."
    )


def client_strategy(strategy: FlowerStrategy) -> Strategy:
    """The core strategy whose ``client_loss_term`` every client adds: ours itself; for Flower's ``FedProx`` its
    proximal term (read from the strategy object); otherwise none (``FedAvg``)."""
    inner = wrapped_strategy(strategy)
    if isinstance(inner, HFTrustStrategy):
        return inner.strategy
    if isinstance(inner, FlowerFedProx) and inner.proximal_mu:
        return FedProx(mu=float(inner.proximal_mu))
    return FedAvg()


def strategy_state(strategy: FlowerStrategy) -> dict[str, Any]:
    """The server state a strategy carries from round to round (FedOpt's moments, ours or Flower's)."""
    inner = wrapped_strategy(strategy)
    if isinstance(inner, HFTrustStrategy):
        return {"core": inner.strategy.state_dict()}
    if isinstance(inner, FlowerFedOpt):
        copy = lambda d: None if d is None else {k: np.array(v, copy=True) for k, v in d.items()}  # noqa: E731
        return {"flower_fedopt": {"m_t": copy(inner.m_t), "v_t": copy(inner.v_t)}}
    return {}


def load_strategy_state(strategy: FlowerStrategy, state: dict[str, Any]) -> None:
    """Restore :func:`strategy_state` into ``strategy`` (resuming a run)."""
    inner = wrapped_strategy(strategy)
    if "core" in state and isinstance(inner, HFTrustStrategy):
        inner.strategy.load_state_dict(state["core"])
    elif "flower_fedopt" in state and isinstance(inner, FlowerFedOpt):
        inner.m_t = state["flower_fedopt"]["m_t"]
        inner.v_t = state["flower_fedopt"]["v_t"]
