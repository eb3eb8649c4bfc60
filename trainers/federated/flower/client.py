"""The client side: a Flower ``ClientApp`` whose handlers run a core :class:`ClientTrainer`.

One :class:`ClientRuntime` holds what every client of a federation needs (the client trainer with its model,
the data source, the run options); the ``ClientApp`` resolves it for each message and calls its handlers:

* ``train``: load the global arrays, build the client's context with the core's :func:`~..rounds.client_context`
  (the same seeding for (seed, round, client) as :class:`FederatedTrainer`), run ``client_trainer.fit`` and reply
  with the trainable parameters, the example count (Flower's ``num-examples``), ``unit-weight`` and the
  client's scalar metrics (one ``ArrayRecord``, one ``MetricRecord``, as Flower's strategies expect);
* ``evaluate``: the same model on the client's local evaluation data;
* ``query.hf_trust``: small protocol messages (the partition handshake, GGEUR's statistics round ...).

A client that raises produces an error reply (Flower's semantics); the ServerApp records it in the history.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from hf_trust.errors import HFTrustConfigError

from ..client import ClientContext, ClientTrainer, load_params, num_rows, trainable_params
from ..partition import Partitions
from ..rounds import client_context
from ..strategy import FedAvg, Strategy
from ..trainer import FederatedConfig
from ._records import (
    CLIENT_RECORD_KEY,
    JOB_KEY,
    LOCAL_EPOCHS_KEY,
    NUM_EXAMPLES_KEY,
    SEED_KEY,
    arrays_to_params,
    client_record,
    merged_config,
    metric_record,
    params_to_arrays,
    single_array_record,
    state_from_bytes,
    state_to_bytes,
)

#: ``query.<QUERY_ACTION>`` messages carry ``ACTION_KEY`` naming the protocol step.
QUERY_ACTION = "hf_trust"
ACTION_KEY = "hf-trust-action"

DataSource = Union[Partitions, Callable[[int, Context], Any], None]


def partition_id(context: Context) -> int:
    """The client index of this SuperNode: ``partition-id`` of its node config (the Simulation Engine sets it;
    a deployed SuperNode gets it from ``--node-config "partition-id=K num-partitions=N"``)."""
    pid = context.node_config.get("partition-id")
    if pid is None:
        raise HFTrustConfigError(
            "this SuperNode has no 'partition-id' in its node config; start it with "
            '--node-config "partition-id=<k> num-partitions=<n>" so that it knows which client it is.'
        )
    return int(pid)


class ClientRuntime:
    """What the ``ClientApp`` of one federation needs on every SuperNode.

    Args:
        client_trainer: a core :class:`ClientTrainer` (``SupervisedClientTrainer``, ``PromptClientTrainer`` ...);
            its ``model`` is loaded with the global arrays before every round.
        data: the training data: a :class:`Partitions` (client ``k`` = ``partitions.client_dataset(k)``), or a
            callable ``(partition_id, context) -> dataset`` for a SuperNode that loads its own local data.
        config: the run options (seed, local epochs, client timeout); the ServerApp's seed and local epochs
            travel in the train config and take precedence, so a deployed SuperNode needs no copy of them.
        strategy: the core strategy whose client loss term (FedProx) every local step adds: the federation's
            own object (see :func:`~.strategy.client_strategy`); ``None``: no term.
        eval_data: local evaluation data for ``evaluate`` messages (same forms as ``data``); default ``data``.
        torch_threads: ``torch.set_num_threads`` in the client process (``None``: leave it).
        client_mods: Flower mods around the train handler (e.g. ``flwr.clientapp.mod.fixedclipping_mod``).
    """

    def __init__(
        self,
        client_trainer: ClientTrainer,
        data: DataSource,
        config: FederatedConfig,
        strategy: Optional[Strategy] = None,
        eval_data: DataSource = None,
        torch_threads: Optional[int] = None,
        client_mods: Optional[Sequence[Callable]] = None,
    ):
        if getattr(client_trainer, "read_params", None) is not None:
            raise HFTrustConfigError(
                "DeepSpeed client trainers spread one client over every rank of an `accelerate launch` job; on "
                "Flower each SuperNode trains alone: use a SupervisedClientTrainer (or run the SuperNode's "
                "training inside its own accelerate job)."
            )
        self.client_trainer = client_trainer
        self.data = data
        self.eval_data = eval_data
        self.config = config
        self.strategy = strategy if strategy is not None else FedAvg()
        self.torch_threads = torch_threads
        self.client_mods = list(client_mods or [])
        self._reference = {k: v.detach().cpu() for k, v in trainable_params(client_trainer.model).items()}

    # ------------------------------------------------------------------ data
    @staticmethod
    def _resolve(source: DataSource, k: int, context: Context) -> Any:
        if source is None:
            raise HFTrustConfigError("this ClientRuntime has no data; pass partitions or a loader.")
        if isinstance(source, Partitions):
            if not 0 <= k < source.num_clients:
                raise HFTrustConfigError(
                    f"partition-id {k} is outside the {source.num_clients} clients of the partition; give every "
                    f"SuperNode a partition-id in [0, {source.num_clients})."
                )
            return source.client_dataset(k)
        return source(k, context)

    def dataset(self, k: int, context: Context) -> Any:
        return self._resolve(self.data, k, context)

    def eval_dataset(self, k: int, context: Context) -> Any:
        return self._resolve(self.eval_data if self.eval_data is not None else self.data, k, context)

    def local_rows(self, k: int, context: Context) -> int:
        """Rows of the client's local data (reported in the handshake)."""
        return num_rows(self.dataset(k, context))

    @property
    def reference_params(self) -> dict[str, torch.Tensor]:
        """Names, shapes and dtypes of what travels (the model's trainable parameters)."""
        return self._reference

    # ------------------------------------------------------------------ client state in the Context
    @staticmethod
    def _state_key(cfg: dict) -> str:
        return f"hf-trust-state/{cfg.get(JOB_KEY, 'default')}"

    def load_state(self, context: Context, cfg: dict) -> dict:
        rec = context.state.config_records.get(self._state_key(cfg))
        return state_from_bytes(rec["blob"]) if rec is not None else {}

    def save_state(self, context: Context, cfg: dict, state: dict) -> None:
        if state:
            context.state[self._state_key(cfg)] = ConfigRecord({"blob": state_to_bytes(state)})

    # ------------------------------------------------------------------ hooks for method-specific runtimes
    def before_fit(self, ctx: ClientContext, cfg: dict) -> None:
        """Called after the global arrays are loaded, before local training (FPL's VPTPR projector)."""

    # ------------------------------------------------------------------ handlers
    def _setup_threads(self) -> None:
        if self.torch_threads and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)

    def train(self, msg: Message, context: Context, cfg: dict) -> Message:
        if self.client_mods:
            from flwr.client.mod.utils import make_ffn

            return make_ffn(lambda m, c: self._train(m, c, cfg), self.client_mods)(msg, context)
        return self._train(msg, context, cfg)

    def _train(self, msg: Message, context: Context, cfg: dict) -> Message:
        self._setup_threads()
        k = partition_id(context)
        key, arrays = single_array_record(msg.content)
        global_params = arrays_to_params(arrays, self._reference)
        round_idx = int(cfg.get("server-round", 1)) - 1
        model = self.client_trainer.model
        load_params(model, global_params)
        # the ServerApp's seed and local epochs travel with the message: a deployed SuperNode needs no copy
        ctx = client_context(
            client=k,
            round_idx=round_idx,
            seed=int(cfg.get(SEED_KEY, self.config.seed)),
            dataset=self.dataset(k, context),
            state=self.load_state(context, cfg),
            global_params=global_params,
            strategy=self.strategy,
            local_epochs=int(cfg.get(LOCAL_EPOCHS_KEY, self.config.local_epochs)),
            client_timeout=self.config.client_timeout,
        )
        self.before_fit(ctx, cfg)
        t0 = time.perf_counter()
        result = self.client_trainer.fit(ctx)
        seconds = time.perf_counter() - t0
        self.save_state(context, cfg, ctx.state)
        named = dict(model.named_parameters())
        params = {n: named[n] for n in global_params}
        content = RecordDict(
            {
                key: params_to_arrays(params),
                "metrics": metric_record({**result.metrics, "client-seconds": seconds}, result.num_examples),
                CLIENT_RECORD_KEY: client_record(k),
            }
        )
        return Message(content, reply_to=msg)

    def evaluate(self, msg: Message, context: Context, cfg: dict) -> Message:
        self._setup_threads()
        k = partition_id(context)
        _, arrays = single_array_record(msg.content)
        load_params(self.client_trainer.model, arrays_to_params(arrays, self._reference))
        ds = self.eval_dataset(k, context)
        metrics = self.client_trainer.evaluate(ds)
        content = RecordDict({"metrics": metric_record(metrics, num_rows(ds)), CLIENT_RECORD_KEY: client_record(k)})
        return Message(content, reply_to=msg)

    def query(self, action: str, msg: Message, context: Context, cfg: dict) -> Message:
        if action == "info":
            k = partition_id(context)
            if isinstance(self.data, Partitions) and k >= self.data.num_clients:
                # a SuperNode beyond this federation's clients (a simulation sized for a larger one): unused
                rec = client_record(k, **{NUM_EXAMPLES_KEY: -1})
            else:
                rec = client_record(k, **{NUM_EXAMPLES_KEY: int(self.local_rows(k, context))})
            declared = context.node_config.get("num-partitions")
            if declared is not None:  # checked by a deployment's handshake against the app's client count
                rec["num-partitions"] = int(declared)
            return Message(RecordDict({CLIENT_RECORD_KEY: rec}), reply_to=msg)
        raise HFTrustConfigError(
            f"unknown hf-trust query action {action!r}; the ServerApp and the ClientApp run different hf-trust code."
        )


# ---------------------------------------------------------------------- resolving the runtime of a message
_RUNTIMES: OrderedDict[str, ClientRuntime] = OrderedDict()
_CACHE_SIZE = 2


def runtime_from_bundle(path: str) -> ClientRuntime:
    """Load (once per process, a small LRU) the runtime a simulation wrote to ``path``.

    The Simulation Engine ships the ``ClientApp`` to a Ray actor with every message; keeping the model and the
    data out of it (a path instead) makes that shipping cost a few hundred bytes instead of the whole dataset.
    """
    rt = _RUNTIMES.get(path)
    if rt is None:
        import cloudpickle

        with open(path, "rb") as f:
            rt = cloudpickle.load(f)
        _RUNTIMES[path] = rt
        while len(_RUNTIMES) > _CACHE_SIZE:
            _RUNTIMES.popitem(last=False)
    else:
        _RUNTIMES.move_to_end(path)
    return rt


def _bundle_resolver(cfg: dict, context: Context) -> ClientRuntime:
    job = cfg.get(JOB_KEY)
    if not job:
        raise HFTrustConfigError("the message names no hf-trust job; it was not sent by an hf-trust ServerApp.")
    return runtime_from_bundle(str(job))


class _FixedResolver:
    def __init__(self, runtime: ClientRuntime):
        self.runtime = runtime

    def __call__(self, cfg: dict, context: Context) -> ClientRuntime:
        return self.runtime


class _FactoryResolver:
    def __init__(self, factory: Callable[[Context], ClientRuntime]):
        self.factory = factory

    def __call__(self, cfg: dict, context: Context) -> ClientRuntime:
        return self.factory(context)


def build_client_app(
    runtime: Optional[ClientRuntime] = None,
    client_mods: Optional[Sequence[Callable]] = None,
    factory: Optional[Callable[[Context], ClientRuntime]] = None,
) -> ClientApp:
    """A ``ClientApp`` for ``runtime`` (deployment); for ``factory(context) -> runtime`` (a deployment whose
    federation depends on the run config, e.g. its number of clients; the factory should cache); or, with
    neither, one that finds the runtime of each message from its job key (the simulation bundles)."""
    if runtime is not None:
        resolve: Callable[[dict, Context], ClientRuntime] = _FixedResolver(runtime)
    elif factory is not None:
        resolve = _FactoryResolver(factory)
    else:
        resolve = _bundle_resolver
    app = ClientApp()

    @app.train(mods=list(client_mods or []))
    def _train(msg: Message, context: Context) -> Message:
        cfg = merged_config(msg.content)
        return resolve(cfg, context).train(msg, context, cfg)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        cfg = merged_config(msg.content)
        return resolve(cfg, context).evaluate(msg, context, cfg)

    @app.query(QUERY_ACTION)
    def _query(msg: Message, context: Context) -> Message:
        cfg = merged_config(msg.content)
        return resolve(cfg, context).query(str(cfg.get(ACTION_KEY, "info")), msg, context, cfg)

    return app
