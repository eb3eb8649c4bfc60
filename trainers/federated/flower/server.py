"""FlowerFederation: a federation of core client trainers run by Flower (simulation or deployment).

The ServerApp here only moves the federated core's objects in and out of Flower messages: the round's steps
(the non-finite check, the history row, the checkpoint with its retention and the strategy's state) are the
core's (:mod:`..rounds`, :mod:`..checkpoint`); the aggregation is the strategy's (ours through
:class:`HFTrustStrategy`, which uses the core's weighted mean and server step).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy as FlowerStrategy
from flwr.supercore.exit import add_exit_handler  # Flower's own exit path (flwr-serverapp on a signal)

from hf_trust.atomic import atomic_save, atomic_write_json
from hf_trust.errors import FederationError, FederationTimeout, HFTrustConfigError, HFTrustTypeError

from ..checkpoint import torch_load, verify_checkpoint
from ..client import ClientTrainer, load_params, trainable_params
from ..partition import Partitions
from ..rounds import (
    derived_seed,
    evaluate_into,
    finish_row,
    history_row,
    nonfinite_parameters,
    nonfinite_record,
    save_round_checkpoint,
    server_state,
)
from ..trainer import FederatedConfig
from ._records import (
    JOB_KEY,
    LOCAL_EPOCHS_KEY,
    SEED_KEY,
    array_bytes,
    arrays_to_numpy,
    arrays_to_params,
    params_to_arrays,
    reply_record,
    wire_bytes,
)
from .client import ClientRuntime, DataSource, build_client_app
from .handshake import query_partitions, wait_for_nodes
from .parent_watch import watch_parent
from .strategy import (
    PartitionGrid,
    as_flower_strategy,
    client_strategy,
    load_strategy_state,
    strategy_state,
    wrapped_strategy,
)

logger = logging.getLogger("hf_trust.trainers.federated.flower")


def _is_in_memory(grid: Grid) -> bool:
    """The Simulation Engine's grid (``InMemoryGrid``, in the driver process), not a deployment's."""
    return isinstance(getattr(grid, "pull_interval", None), (int, float))


#: seconds Flower's deployment grid (``HttpGrid.send_and_receive``, flwr 1.42) sleeps between polls for replies
FLOWER_DEPLOYMENT_POLL = 3.0
#: the shortest poll interval on a deployment's grid: each poll is an HTTP request to the SuperLink
DEPLOYMENT_MIN_POLL = 0.1


@contextlib.contextmanager
def _seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's ``random`` (Flower's node sampling) and NumPy's legacy global RNG (Flower's DP noise) for
    one strategy call, then restore both, so a run is reproducible without touching the caller's streams."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def short_reason(reason: str, limit: int = 400) -> str:
    """The client's own error message out of Flower's error reason (which wraps it in the engine's traceback).

    Flower hands a ClientApp's exception to the ServerApp only as this text (no type, no fields), so it is read
    back from the text's two known forms."""
    text = str(reason)
    m = re.fullmatch(r"\s*<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>\s*", text, flags=re.S)
    if m and "Message: " not in text:
        return f"{m.group(1)}: {m.group(2)}"[:limit]
    if "Message: " in text:
        text = text.rsplit("Message: ", 1)[1]
        text = text.rstrip().removesuffix("'>").rstrip()
    else:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else text
    return text[:limit]


def _reply_params(msg: Message) -> dict[str, torch.Tensor]:
    """A reply's arrays as tensors sharing their memory (for the core's non-finite check)."""
    out: dict[str, torch.Tensor] = {}
    for rec in msg.content.array_records.values():
        for name, arr in rec.items():
            a = arr.numpy()
            if a.dtype.kind in "fc":
                out[name] = torch.from_numpy(np.asarray(a))
    return out


class FlowerFederation:
    """A federation of core client trainers on Flower.

    Args:
        client_trainer: a :class:`ClientTrainer` of the federated core; its model's trainable parameters are what
            travels, its ``fit`` runs on every SuperNode, its ``evaluate`` on the server's ``eval_datasets``.
        strategy: a Flower strategy (``flwr.serverapp.strategy.FedAvg()``, ``FedProx(proximal_mu=...)``,
            ``FedAdam()``, ``FedMedian()``, ``Krum(num_malicious_nodes=...)``, ``FedTrimmedAvg(beta=...)``, a DP
            wrapper around one of them ...) used unchanged, or a core strategy (``FedAvg()``, ``FedProx(mu=...)``,
            ``FedAdam()`` of ``hf_trust.trainers.federated``), which aggregates exactly as ``FederatedTrainer``.
            Default: the core FedAvg.
        config: :class:`FederatedConfig`: rounds, local epochs, seed, client timeout, ``eval_every``,
            ``output_dir`` (history.json, partition.json and global_params.pt are written there, and every
            ``save_every`` rounds a complete checkpoint-<r>/ as the core writes it: ``server.pt`` with the global
            parameters, the strategy's state and the history, plus ``global_params.pt`` and ``history.json``;
            ``save_total_limit`` prunes them), and ``client_fraction``/``sampling`` for core strategies (a Flower
            strategy samples by its own ``fraction_train``).
        eval_datasets: name → dataset evaluated on the server with ``client_trainer.evaluate`` every
            ``eval_every`` rounds (``eval_<name>_<metric>`` columns, as in ``FederatedTrainer``).
        client_eval_data: local evaluation data of each client for the strategy's ``evaluate`` messages
            (Partitions or ``(partition_id, context) -> dataset``); default: the client's training data.
        round_timeout: seconds the ServerApp waits for a round's replies (Flower's ``timeout``); clients that have
            not answered by then are recorded as ``timed_out_clients`` and left out of the aggregate.
        client_mods: Flower mods around the client's train handler (e.g. ``fixedclipping_mod`` for
            ``DifferentialPrivacyClientSideFixedClipping``).
        record_client_params: keep every round's global arrays and client replies in ``round_arrays`` (tests,
            robustness analyses; costs memory).
        torch_threads: ``torch.set_num_threads`` in each client process (1 keeps virtual clients from competing).
        handshake_timeout: seconds to wait for the SuperNodes to connect and say which partition they host.
        node_timeout: seconds a round waits for the SuperNodes a Flower strategy samples from (its
            ``min_available_nodes``); past it the round is recorded as failed (``node_timeout`` with the partitions
            whose SuperNodes are gone), the run goes on and ends with :class:`~hf_trust.errors.FederationTimeout`.
        The run config may set ``num-server-rounds``, ``output-dir``, ``resume-from``, ``handshake-timeout``,
        ``round-timeout``, ``node-timeout`` and ``pull-interval``.
        pull_interval: seconds between the ServerApp's polls for replies in the Simulation Engine (Flower's
            0.1 s is a floor on every round; ``None`` keeps it).  A deployment polls every 3 s (Flower's) unless its
            run config sets ``pull-interval`` (at least 0.1 s).
        reject_nonfinite: leave a reply with NaN/inf arrays out of the aggregate and record it as a failed client
            (``NonFiniteUpdate``), as ``FederatedTrainer`` does; ``False`` hands it to the strategy.
        verbose: show Flower's and Ray's logs.
    """

    def __init__(
        self,
        client_trainer: ClientTrainer,
        strategy: Any = None,
        config: Optional[FederatedConfig] = None,
        eval_datasets: Optional[dict[str, Any]] = None,
        *,
        client_eval_data: DataSource = None,
        round_timeout: Optional[float] = 600.0,
        client_mods: Optional[Sequence[Callable]] = None,
        record_client_params: bool = False,
        torch_threads: Optional[int] = 1,
        handshake_timeout: float = 600.0,
        node_timeout: Optional[float] = 600.0,
        pull_interval: Optional[float] = 0.01,
        reject_nonfinite: bool = True,
        verbose: bool = False,
    ):
        if not isinstance(client_trainer, ClientTrainer):
            raise HFTrustTypeError(f"client_trainer must be a ClientTrainer, got {type(client_trainer).__name__}.")
        self.config = config or FederatedConfig()
        self.client_trainer = client_trainer
        self.strategy: FlowerStrategy = as_flower_strategy(strategy, self.config)
        if isinstance(strategy, FlowerStrategy) and self.config.client_fraction != 1.0:
            logger.warning(
                "FederatedConfig.client_fraction=%s is ignored with a Flower strategy; set its fraction_train.",
                self.config.client_fraction,
            )
        self.eval_datasets = eval_datasets or {}
        self.client_eval_data = client_eval_data
        self.round_timeout = round_timeout
        self.client_mods = list(client_mods or [])
        self.record_client_params = record_client_params
        self.torch_threads = torch_threads
        self.handshake_timeout = handshake_timeout
        self.pull_interval = pull_interval
        self.reject_nonfinite = reject_nonfinite
        self.verbose = verbose
        self.initial_params = {k: v.detach().cpu().clone() for k, v in trainable_params(client_trainer.model).items()}
        if not self.initial_params:
            raise HFTrustConfigError("the model has no trainable parameters; nothing would be federated.")
        self.global_params: dict[str, torch.Tensor] = dict(self.initial_params)
        self.history: list[dict[str, Any]] = []
        self.round_arrays: dict[int, dict[str, Any]] = {}
        self.nodes: dict[int, int] = {}
        self._seen_nodes: set[int] = set()
        self._poll = DEPLOYMENT_MIN_POLL
        self._deployment_poll: Optional[float] = None
        #: seconds a round waits for the SuperNodes a Flower strategy needs (``node-timeout`` in the run config);
        #: past it the round is recorded as failed, naming the partitions whose SuperNodes are gone
        self.node_timeout: Optional[float] = node_timeout
        #: a complete checkpoint-<r> folder to resume from (also ``resume-from`` in the run config)
        self.resume_from: Optional[str] = None
        #: wall-clock seconds of the last run's handshake (includes the Simulation Engine's start-up) and protocol rounds
        self.timings: dict[str, float] = {}
        #: the exception of the last simulated run, if its ServerApp failed (see run_simulations)
        self.error: Optional[BaseException] = None

    # ------------------------------------------------------------------ the client side
    def runtime_options(self) -> dict[str, Any]:
        """The :class:`ClientRuntime` keyword arguments of this federation (a method's runtime adds its own)."""
        return {
            "strategy": client_strategy(self.strategy),
            "eval_data": self.client_eval_data,
            "torch_threads": self.torch_threads,
            "client_mods": self.client_mods,
        }

    def client_runtime(self, data: DataSource) -> ClientRuntime:
        """The :class:`ClientRuntime` every SuperNode of this federation runs (``data``: partitions or a loader)."""
        return ClientRuntime(self.client_trainer, data, self.config, **self.runtime_options())

    # ------------------------------------------------------------------ the two ways to run
    def run_simulation(
        self, partitions: Partitions, backend_config: Optional[dict] = None, verbose: Optional[bool] = None
    ) -> list[dict[str, Any]]:
        """Run the federation on Flower's Simulation Engine, one virtual SuperNode per client; returns the history.

        ``backend_config``: Ray settings (default :func:`default_backend_config`).  Ray's start-up (seconds) is
        paid once per call; :func:`run_simulations` runs several federations over one start-up.
        """
        from .simulation import run_simulations

        return run_simulations([(self, partitions)], backend_config=backend_config, verbose=verbose)[0]

    def apps(self, data: DataSource, num_clients: Optional[int] = None) -> tuple[ClientApp, ServerApp]:
        """The real ``ClientApp`` and ``ServerApp`` for ``flwr run`` (Deployment Engine) or ``run_simulation``.

        ``data`` is the partition (every SuperNode picks its ``partition-id``) or a loader
        ``(partition_id, context) -> dataset`` for SuperNodes holding their own data; the ServerApp waits for
        ``num_clients`` SuperNodes (default: the partition's client count, else the strategy's minimum).
        The run config may override ``num-server-rounds``, ``output-dir`` and ``resume-from``.
        """
        return self.client_app(data), self.server_app(data, num_clients)

    def client_app(self, data: DataSource) -> ClientApp:
        """The ``ClientApp`` of :meth:`apps` (for an app module: ``app = fed.client_app(parts)``)."""
        return build_client_app(self.client_runtime(data))

    def server_app(self, data: DataSource = None, num_clients: Optional[int] = None) -> ServerApp:
        """The ``ServerApp`` of :meth:`apps` (for an app module: ``app = fed.server_app(parts)``)."""
        if num_clients is None and isinstance(data, Partitions):
            num_clients = data.num_clients
        partitions = data if isinstance(data, Partitions) else None
        server_app = ServerApp()

        @server_app.main()
        def _main(grid: Grid, context: Context) -> None:
            self.serve(grid, context, job="", num_clients=num_clients, partitions=partitions)

        return server_app

    # ------------------------------------------------------------------ the ServerApp
    def _expected_nodes(self, num_clients: Optional[int]) -> int:
        if num_clients:
            return int(num_clients)
        return int(getattr(wrapped_strategy(self.strategy), "min_available_nodes", 1) or 1)

    def handshake(self, grid: Grid, job: str, num_clients: Optional[int]) -> dict[int, int]:
        """Wait for the SuperNodes, ask each which partition it hosts; returns partition id → node id.

        A deployment (``job == ""``) is strict: out-of-range partition ids and a disagreeing ``num-partitions``
        are errors naming the node (see :func:`~.handshake.query_partitions`)."""
        expected = self._expected_nodes(num_clients)
        node_ids = wait_for_nodes(grid, expected, self.handshake_timeout)
        nodes = query_partitions(grid, node_ids, job, num_clients, self.handshake_timeout, not job, self._poll)
        self._seen_nodes = set(node_ids)
        if len(nodes) < expected:
            missing = sorted(set(range(expected)) - set(nodes)) if num_clients else []
            raise FederationError(
                f"{len(nodes)} of {expected} SuperNodes answered the handshake"
                + (f" (no SuperNode for partitions {missing})" if missing else "")
                + "; start one SuperNode per partition."
            )
        return nodes

    def before_rounds(self, grid: Grid, job: str) -> None:
        """Protocol rounds before training (GGEUR's statistics round); the base federation has none."""

    def round_config(self, server_round: int, job: str) -> ConfigRecord:
        return ConfigRecord(
            {JOB_KEY: job, SEED_KEY: int(self.config.seed), LOCAL_EPOCHS_KEY: int(self.config.local_epochs)}
        )

    def on_round_end(self, row: dict[str, Any], start: dict[str, torch.Tensor], replies: list[Message]) -> None:
        """Hook after aggregation (FPL's update diagnostics)."""

    def _resume(self, path: str) -> tuple[int, Any]:
        """Load a complete checkpoint written by this federation: the rounds it holds and the global arrays
        exactly as the strategy returned them (their dtype kept, so a resumed run continues bit for bit)."""
        meta = verify_checkpoint(path)
        state = torch_load(Path(path) / "server.pt")
        arrays = params_to_arrays(state["global_params"])
        self._check_resumed(path, state["global_params"])
        load_strategy_state(self.strategy, state["strategy"])
        self.history = list(state["history"])
        return int(meta["round"]), arrays

    def _check_resumed(self, path: str, saved: dict[str, torch.Tensor]) -> None:
        model = self.initial_params
        if set(saved) != set(model) or any(tuple(saved[k].shape) != tuple(model[k].shape) for k in model):
            raise HFTrustConfigError(
                f"checkpoint {path} does not fit the model's trainable parameters (checkpoint: "
                f"{sorted(saved)[:5]}, model: {sorted(model)[:5]}); resume with the model it was written with."
            )

    def serve(
        self,
        grid: Grid,
        context: Context,
        job: str = "",
        num_clients: Optional[int] = None,
        partitions: Optional[Partitions] = None,
    ) -> list[dict[str, Any]]:
        """The ServerApp's main: handshake, protocol rounds, then ``rounds`` rounds of the strategy."""
        run_cfg = dict(context.run_config or {})
        rounds = int(run_cfg.get("num-server-rounds", self.config.rounds))
        out_dir = run_cfg.get("output-dir") or self.config.output_dir
        resume_from = run_cfg.get("resume-from") or self.resume_from
        # every wait of the ServerApp is bounded; a deployment sets the bounds in its run config
        self.handshake_timeout = float(run_cfg.get("handshake-timeout", self.handshake_timeout))
        self.round_timeout = float(run_cfg.get("round-timeout", self.round_timeout or 0)) or None
        self.node_timeout = float(run_cfg.get("node-timeout", self.node_timeout or 0)) or None
        self._deployment_poll = float(run_cfg["pull-interval"]) if "pull-interval" in run_cfg else None
        self.history, self.round_arrays = [], {}
        self.global_params = {k: v.clone() for k, v in self.initial_params.items()}
        done, arrays = (0, params_to_arrays(self.global_params))
        if resume_from:
            done, arrays = self._resume(str(resume_from))
        self._poll = self.poll_interval(grid)
        self._last_round = (list(self.history), arrays)
        watch = None
        if not _is_in_memory(grid):
            if out_dir:
                self._save_when_flower_exits(Path(out_dir))
            # a lost SuperExec must end this process even while its main thread waits on Flower's push workers
            watch = watch_parent()
        try:
            t0 = time.perf_counter()
            self.nodes = self.handshake(grid, job, num_clients)
            self.timings = {"handshake_seconds": time.perf_counter() - t0}
            ordered = PartitionGrid(grid, self.nodes, poll=self._poll)
            if out_dir:
                Path(out_dir).mkdir(parents=True, exist_ok=True)
                if partitions is not None:
                    partitions.save(Path(out_dir) / "partition.json")
            t0 = time.perf_counter()
            self.before_rounds(ordered, job)
            self.timings["before_rounds_seconds"] = time.perf_counter() - t0
            for r in range(done + 1, rounds + 1):
                self._refresh_nodes(ordered, job, num_clients)
                arrays, row = self._round(ordered, arrays, r, job)
                self.history.append(row)
                self._last_round = (list(self.history), arrays)
                if out_dir and self.config.save_every and r % self.config.save_every == 0:
                    self._checkpoint(Path(out_dir), r, arrays)
            lost = [row for row in self.history[done:] if "node_timeout" in row]
            if lost:
                raise FederationTimeout(
                    f"{len(lost)} round(s) ended without the SuperNodes they waited for (rounds "
                    f"{[row['round'] for row in lost]}; partitions {lost[-1]['node_timeout']}); the history and the "
                    f"last global parameters are saved. Restart the SuperNodes and resume with resume-from."
                )
        finally:  # a failed run still leaves its history and last global parameters
            if watch is not None:
                watch.set()
            self.global_params = arrays_to_params(arrays, self.initial_params)
            load_params(self.client_trainer.model, self.global_params)
            if out_dir:
                Path(out_dir).mkdir(parents=True, exist_ok=True)
                self._save(Path(out_dir))
        return self.history

    def _save_when_flower_exits(self, out_dir: Path) -> None:
        """Write ``history.json`` and the last global parameters when Flower ends this ServerApp process.

        A deployment's ``flwr-serverapp`` exits on a signal (its SuperLink was lost or restarted, ``flwr stop``)
        through Flower's exit path, which ends the process 5 s later with ``os._exit``, before the ``finally`` of
        :meth:`serve` may run; a handler that runs before that deadline keeps the completed rounds."""

        def save() -> None:
            history, arrays = self._last_round
            self.history = history
            self.global_params = arrays_to_params(arrays, self.initial_params)
            self._save(out_dir)

        add_exit_handler(save, run_before_force_exit=True)

    def poll_interval(self, grid: Grid) -> float:
        """Seconds between polls for replies on ``grid``.  The Simulation Engine's grid: ``pull_interval`` (``None``:
        Flower's 0.1 s).  A deployment's: the run config's ``pull-interval``, at least :data:`DEPLOYMENT_MIN_POLL`
        (each poll is a request to the SuperLink), else Flower's 3 s.  On ``examples/flower_app`` a 0.1 s poll did
        not shorten a deployment round: each SuperNode sleeps 3 s after its reply before it pulls the next message
        (``benchmarks/results/flower.md``)."""
        if _is_in_memory(grid):
            return float(grid.pull_interval if self.pull_interval is None else self.pull_interval)
        poll = getattr(self, "_deployment_poll", None)
        return FLOWER_DEPLOYMENT_POLL if poll is None else max(poll, DEPLOYMENT_MIN_POLL)

    def _refresh_nodes(self, grid: PartitionGrid, job: str, num_clients: Optional[int]) -> None:
        """Handshake with SuperNodes that connected since the last round: one that comes back with the same
        ``partition-id`` (under a new node id) replaces its lost predecessor."""
        live = set(grid._grid.get_node_ids())
        new = sorted(live - self._seen_nodes)
        if not new:
            return
        found = query_partitions(grid._grid, new, job, num_clients, self.handshake_timeout, not job, self._poll)
        self._seen_nodes |= set(new)
        for k, node in found.items():
            old = self.nodes.get(k)
            # the SuperLink lists a killed SuperNode until its heartbeat expires: the newcomer wins
            logger.warning("partition %d is now served by SuperNode %d (was %s)", k, node, old)
            self.nodes[k] = node
        grid.partition_nodes = dict(self.nodes)

    def _checkpoint(self, out_dir: Path, r: int, arrays: Any) -> None:
        """The core's complete checkpoint-<r> (server state with the strategy's, manifest last, retention).
        ``server.pt`` keeps the global arrays in the strategy's dtype; ``global_params.pt`` the model's."""
        exact = {k: torch.from_numpy(np.array(a, copy=True)) for k, a in arrays_to_numpy(arrays).items()}
        params = {k: v.clone() for k, v in self.global_params.items()}
        history = list(self.history)
        state = server_state(r, exact, strategy_state(self.strategy), history, 1)
        extra = {
            "global_params.pt": lambda p: torch.save(params, p),
            "history.json": lambda p: atomic_write_json(p, history, indent=1, default=float),
        }
        save_round_checkpoint(out_dir, r, state, extra, self.config.save_total_limit)

    def _save(self, folder: Path) -> None:
        """``history.json`` and ``global_params.pt`` (the global trainable parameters) in ``folder``."""
        atomic_write_json(folder / "history.json", self.history, indent=1, default=float)
        params = {k: v.clone() for k, v in self.global_params.items()}
        atomic_save(folder / "global_params.pt", lambda p: torch.save(params, p))

    def _screen(self, replies: list[Message], pid_of: dict[int, int]) -> tuple[list[dict], list[Message], int]:
        """Client records of a round's replies (error replies and non-finite updates recorded as failed, as the
        core does), the replies the strategy sees, and the wire bytes up."""
        records, usable, wire_up = [], [], 0
        for msg in replies:
            k = pid_of.get(msg.metadata.src_node_id, msg.metadata.src_node_id)
            if msg.has_error():
                records.append(
                    {"client": k, "failed": short_reason(msg.error.reason), "error_code": int(msg.error.code)}
                )
                usable.append(msg)  # the strategy sees the error reply, as in Flower
                continue
            params = _reply_params(msg) if self.reject_nonfinite else {}
            bad = nonfinite_parameters(params, list(params))
            if bad:
                records.append(nonfinite_record(k, bad))
                continue
            usable.append(msg)
            records.append(reply_record(k, msg.content))
            wire_up += sum(wire_bytes(a) for a in msg.content.array_records.values())
        return records, usable, wire_up

    def _record_arrays(self, r: int, start: dict[str, torch.Tensor], usable: list[Message], pid_of: dict) -> None:
        self.round_arrays[r] = {
            "global": {k: v.numpy().copy() for k, v in start.items()},
            "clients": {
                pid_of.get(m.metadata.src_node_id, m.metadata.src_node_id): arrays_to_numpy(
                    next(iter(m.content.array_records.values()))
                )
                for m in usable
                if not m.has_error() and m.content.array_records
            },
        }

    def _federated_evaluation(self, grid: Any, arrays: Any, r: int, job: str, row: dict, pid_of: dict) -> None:
        """The strategy's federated evaluation (clients' local data), when it asks for one."""
        with _seeded_global_rngs(derived_seed(self.config.seed, r - 1, 17)):
            emsgs = list(self.strategy.configure_evaluate(r, arrays, self.round_config(r, job), grid))
        if emsgs:
            ereplies = list(grid.send_and_receive(emsgs, timeout=self.round_timeout))
            agg = self.strategy.aggregate_evaluate(r, ereplies)
            row["evaluate_metrics"] = dict(agg) if agg is not None else {}
            row["evaluate_failed_clients"] = sorted(
                pid_of.get(m.metadata.src_node_id, m.metadata.src_node_id) for m in ereplies if m.has_error()
            )

    def _lost_round(self, r: int, grid: PartitionGrid, exc: FederationTimeout, t0: float) -> dict[str, Any]:
        """The history row of a round whose strategy could not get the SuperNodes it waits for."""
        missing = grid.missing_partitions()
        logger.error("round %d: %s", r, exc)
        row = history_row(r - 1, [], [], 0)
        row.update(
            {
                "timed_out_clients": [],
                "aggregated": False,
                "wire_bytes_up": 0,
                "train_metrics": {},
                "node_timeout": missing,
                "errors": {str(k): f"FederationTimeout: {exc}" for k in missing},
            }
        )
        return finish_row(row, [], t0)

    def _round(self, grid: PartitionGrid, arrays: Any, r: int, job: str) -> tuple[Any, dict[str, Any]]:
        t0 = time.time()
        pid_of = {n: k for k, n in self.nodes.items()}
        start = arrays_to_params(arrays, self.initial_params)
        bytes_down = array_bytes(arrays)
        try:
            grid.begin_wait(self.node_timeout)
            with _seeded_global_rngs(derived_seed(self.config.seed, r - 1, 7)):
                msgs = list(self.strategy.configure_train(r, arrays, self.round_config(r, job), grid))
        except FederationTimeout as exc:
            return arrays, self._lost_round(r, grid, exc, t0)
        finally:
            grid.end_wait()
        sent = [m.metadata.dst_node_id for m in msgs]
        replies = list(grid.send_and_receive(msgs, timeout=self.round_timeout)) if msgs else []
        # replies come in arrival order; partition order makes a strategy's float sums and tie-breaks (Krum picks
        # the first of equal scores) the same in every run
        replies.sort(key=lambda m: pid_of.get(m.metadata.src_node_id, m.metadata.src_node_id))
        answered = {m.metadata.src_node_id for m in replies}
        records, usable, wire_up = self._screen(replies, pid_of)
        bytes_up = sum(array_bytes(a) for m in usable if not m.has_error() for a in m.content.array_records.values())
        if self.record_client_params:
            self._record_arrays(r, start, usable, pid_of)
        with _seeded_global_rngs(derived_seed(self.config.seed, r - 1, 13)):
            new_arrays, train_metrics = self.strategy.aggregate_train(r, usable)
        if new_arrays is not None:
            arrays = new_arrays
        clients = sorted(pid_of.get(n, n) for n in sent)
        row = history_row(r - 1, clients, records, bytes_down, bytes_up=bytes_up)
        row["timed_out_clients"] = sorted(pid_of.get(n, n) for n in sent if n not in answered)
        row["aggregated"] = new_arrays is not None
        row["wire_bytes_up"] = wire_up
        row["train_metrics"] = dict(train_metrics) if train_metrics is not None else {}
        errors = {rec["client"]: rec["failed"] for rec in records if "failed" in rec}
        if errors:
            row["errors"] = {str(k): v for k, v in sorted(errors.items())}
        self._federated_evaluation(grid, arrays, r, job, row, pid_of)
        self.global_params = arrays_to_params(arrays, self.initial_params)
        if self.eval_datasets:
            load_params(self.client_trainer.model, self.global_params)
            evaluate_into(row, self.client_trainer.evaluate, self.eval_datasets, self.config)
        self.on_round_end(row, start, usable)
        return arrays, finish_row(row, records, t0)
