"""FlowerFederation: a federation of core client trainers run by Flower (simulation or deployment)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy as FlowerStrategy

from hf_trust.atomic import atomic_save, atomic_write_json
from hf_trust.errors import HFTrustConfigError, MissingExtraError

from ..client import ClientTrainer, load_params, trainable_params
from ..partition import Partitions
from ..trainer import FederatedConfig, derived_seed
from ._records import (
    JOB_KEY,
    LOCAL_EPOCHS_KEY,
    SEED_KEY,
    array_bytes,
    arrays_to_numpy,
    arrays_to_params,
    params_to_arrays,
    wire_bytes,
)
from .client import ACTION_KEY, QUERY_ACTION, ClientRuntime, DataSource, build_client_app
from .strategy import HFTrustStrategy, as_flower_strategy, reply_partition

logger = logging.getLogger("hf_trust.trainers.federated.flower")


def default_backend_config(
    num_cpus_per_client: float = 1.0,
    num_cpus: Optional[int] = None,
    num_gpus_per_client: float = 0.0,
    **init_args: Any,
) -> dict[str, Any]:
    """Simulation Engine (Ray) settings sized for a small machine.

    Flower's default gives each virtual client 2 CPUs; on a 2-core laptop that is one client at a time. Here
    each client takes ``num_cpus_per_client`` of the ``num_cpus`` Ray may use (default: every core), so
    ``num_cpus / num_cpus_per_client`` clients train at once; the dashboard is off and Ray logs only errors.
    """
    total = int(num_cpus or os.cpu_count() or 1)
    if num_cpus_per_client <= 0 or num_cpus_per_client > total:
        raise HFTrustConfigError(
            f"num_cpus_per_client must be in (0, {total}] (the CPUs Ray may use), got {num_cpus_per_client}."
        )
    args = {"num_cpus": total, "include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    args.update(init_args)
    return {
        "client_resources": {"num_cpus": float(num_cpus_per_client), "num_gpus": float(num_gpus_per_client)},
        "init_args": args,
    }


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


@contextlib.contextmanager
def _flower_log_level(verbose: bool) -> Iterator[None]:
    """Flower logs every round at INFO, its deprecation notices at WARNING and every failing client's traceback at
    ERROR; unless verbose, keep it quiet (client errors are in the history, ServerApp errors are raised)."""
    flwr_logger = logging.getLogger("flwr")
    old = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        flwr_logger.setLevel(old)


def short_reason(reason: str, limit: int = 400) -> str:
    """The client's own error message out of Flower's error reason (which wraps it in the engine's traceback)."""
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


def _nonfinite(msg: Message) -> list[str]:
    """Names of the reply's arrays holding NaN or inf."""
    bad = []
    for rec in msg.content.array_records.values():
        for name, arr in rec.items():
            a = arr.numpy()
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                bad.append(name)
    return bad


class _PartitionOrderedGrid:
    """The ServerApp's grid with ``get_node_ids`` in partition order, so a strategy's seeded sampling picks the same
    clients in every run (node ids are random per run); everything else is the grid itself."""

    def __init__(self, grid: Grid, nodes_by_partition: dict[int, int]):
        self._grid = grid
        self._order = [nodes_by_partition[k] for k in sorted(nodes_by_partition)]

    def get_node_ids(self) -> list[int]:
        live = set(self._grid.get_node_ids())
        return [n for n in self._order if n in live]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


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
            ``save_every`` rounds checkpoint-<r>/ with the history and global parameters so far), and
            ``client_fraction``/``sampling`` for core strategies (a Flower strategy samples by its own
            ``fraction_train``).
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
        pull_interval: seconds between the ServerApp's polls for replies on the Simulation Engine's in-memory grid
            (Flower's default 0.1 s is a floor on every round; ``None`` keeps it).  A deployment's grid is left as is.
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
        pull_interval: Optional[float] = 0.01,
        reject_nonfinite: bool = True,
        verbose: bool = False,
    ):
        if not isinstance(client_trainer, ClientTrainer):
            raise TypeError(f"client_trainer must be a ClientTrainer, got {type(client_trainer).__name__}.")
        self.config = config or FederatedConfig()
        self.client_trainer = client_trainer
        self.core_strategy = strategy if strategy is not None and not isinstance(strategy, FlowerStrategy) else None
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
            raise ValueError("the model has no trainable parameters; nothing would be federated.")
        self.global_params: dict[str, torch.Tensor] = dict(self.initial_params)
        self.history: list[dict[str, Any]] = []
        self.round_arrays: dict[int, dict[str, Any]] = {}
        self.nodes: dict[int, int] = {}
        #: wall-clock seconds of the last run's handshake (includes the Simulation Engine's start-up) and protocol rounds
        self.timings: dict[str, float] = {}
        #: the exception of the last simulated run, if its ServerApp failed (see run_simulations)
        self.error: Optional[BaseException] = None

    # ------------------------------------------------------------------ the client side
    def client_runtime(self, data: DataSource) -> ClientRuntime:
        """The :class:`ClientRuntime` every SuperNode of this federation runs (``data``: partitions or a loader)."""
        rt = ClientRuntime(
            self.client_trainer,
            data,
            self.config,
            strategy=self.core_strategy,
            eval_data=self.client_eval_data,
            torch_threads=self.torch_threads,
            client_mods=self.client_mods,
        )
        return rt

    # ------------------------------------------------------------------ the two ways to run
    def run_simulation(
        self, partitions: Partitions, backend_config: Optional[dict] = None, verbose: Optional[bool] = None
    ) -> list[dict[str, Any]]:
        """Run the federation on Flower's Simulation Engine, one virtual SuperNode per client; returns the history.

        ``backend_config``: Ray settings (default :func:`default_backend_config`).  Ray's start-up (seconds) is
        paid once per call; :func:`run_simulations` runs several federations over one start-up.
        """
        return run_simulations([(self, partitions)], backend_config=backend_config, verbose=verbose)[0]

    def apps(self, data: DataSource, num_clients: Optional[int] = None) -> tuple[ClientApp, ServerApp]:
        """The real ``ClientApp`` and ``ServerApp`` for ``flwr run`` (Deployment Engine) or ``run_simulation``.

        ``data`` is the partition (every SuperNode picks its ``partition-id``) or a loader
        ``(partition_id, context) -> dataset`` for SuperNodes holding their own data; the ServerApp waits for
        ``num_clients`` SuperNodes (default: the partition's client count, else the strategy's minimum).
        The run config may override ``num-server-rounds`` and ``output-dir``.
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
        inner = getattr(self.strategy, "strategy", self.strategy)  # DP wrappers hold the strategy they wrap
        return int(getattr(inner, "min_available_nodes", 1) or 1)

    def handshake(self, grid: Grid, job: str, num_clients: Optional[int]) -> dict[int, int]:
        """Wait for the SuperNodes, ask each which partition it hosts; returns partition id → node id."""
        expected = self._expected_nodes(num_clients)
        deadline = time.monotonic() + self.handshake_timeout
        while len(list(grid.get_node_ids())) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(list(grid.get_node_ids()))} of {expected} SuperNodes connected within "
                    f"{self.handshake_timeout:.0f} s."
                )
            time.sleep(0.5)
        node_ids = sorted(grid.get_node_ids())
        cfg = ConfigRecord({JOB_KEY: job, ACTION_KEY: "info"})
        msgs = [
            Message(RecordDict({"config": cfg}), dst_node_id=n, message_type=f"{MessageType.QUERY}.{QUERY_ACTION}")
            for n in node_ids
        ]
        replies = list(grid.send_and_receive(msgs, timeout=self.handshake_timeout))
        nodes: dict[int, int] = {}
        for msg in replies:
            if msg.has_error():
                raise RuntimeError(f"SuperNode {msg.metadata.src_node_id} failed the handshake: {msg.error.reason}")
            k = reply_partition(msg)
            if k is None or (num_clients is not None and k >= num_clients):
                continue  # not an hf-trust client, or a SuperNode this federation does not use
            if k in nodes:
                raise HFTrustConfigError(
                    f"SuperNodes {nodes[k]} and {msg.metadata.src_node_id} both host partition {k}; give each "
                    f"SuperNode its own partition-id."
                )
            nodes[k] = msg.metadata.src_node_id
        if len(nodes) < expected:
            raise RuntimeError(f"{len(nodes)} of {expected} SuperNodes answered the handshake.")
        return nodes

    def before_rounds(self, grid: Grid, job: str) -> None:
        """Protocol rounds before training (GGEUR's statistics round); the base federation has none."""

    def round_config(self, server_round: int, job: str) -> ConfigRecord:
        return ConfigRecord(
            {JOB_KEY: job, SEED_KEY: int(self.config.seed), LOCAL_EPOCHS_KEY: int(self.config.local_epochs)}
        )

    def on_round_end(self, row: dict[str, Any], start: dict[str, torch.Tensor], replies: list[Message]) -> None:
        """Hook after aggregation (FPL's update diagnostics)."""

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
        self.history, self.round_arrays = [], {}
        self.global_params = {k: v.clone() for k, v in self.initial_params.items()}
        if self.pull_interval is not None and isinstance(getattr(grid, "pull_interval", None), (int, float)):
            grid.pull_interval = self.pull_interval  # the Simulation Engine's InMemoryGrid
        t0 = time.perf_counter()
        self.nodes = self.handshake(grid, job, num_clients)
        self.timings = {"handshake_seconds": time.perf_counter() - t0}
        if isinstance(self.strategy, HFTrustStrategy):
            self.strategy.partition_nodes = dict(self.nodes)
        inner = getattr(self.strategy, "strategy", None)
        if isinstance(inner, HFTrustStrategy):
            inner.partition_nodes = dict(self.nodes)
        ordered = _PartitionOrderedGrid(grid, self.nodes)
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            if partitions is not None:
                partitions.save(Path(out_dir) / "partition.json")
        t0 = time.perf_counter()
        self.before_rounds(ordered, job)
        self.timings["before_rounds_seconds"] = time.perf_counter() - t0
        arrays = params_to_arrays(self.global_params)
        for r in range(1, rounds + 1):
            arrays, row = self._round(ordered, arrays, r, job)
            self.history.append(row)
            if out_dir and self.config.save_every and r % self.config.save_every == 0:
                self._save(Path(out_dir) / f"checkpoint-{r}")
        self.global_params = arrays_to_params(arrays, self.initial_params)
        load_params(self.client_trainer.model, self.global_params)
        if out_dir:
            self._save(Path(out_dir))
        return self.history

    def _save(self, folder: Path) -> None:
        """``history.json`` and ``global_params.pt`` (the global trainable parameters) in ``folder``."""
        atomic_write_json(folder / "history.json", self.history, indent=1, default=float)
        params = {k: v.clone() for k, v in self.global_params.items()}
        atomic_save(folder / "global_params.pt", lambda p: torch.save(params, p))

    def _round(self, grid: Any, arrays: Any, r: int, job: str) -> tuple[Any, dict[str, Any]]:
        t0 = time.time()
        pid_of = {n: k for k, n in self.nodes.items()}
        start = arrays_to_params(arrays, self.initial_params)
        with _seeded_global_rngs(derived_seed(self.config.seed, r - 1, 7)):
            msgs = list(self.strategy.configure_train(r, arrays, self.round_config(r, job), grid))
        sent = [m.metadata.dst_node_id for m in msgs]
        down = sum(array_bytes(a) for m in msgs for a in m.content.array_records.values())
        replies = list(grid.send_and_receive(msgs, timeout=self.round_timeout)) if msgs else []
        # replies come in arrival order; partition order makes a strategy's float sums and tie-breaks (Krum picks
        # the first of equal scores) the same in every run
        replies.sort(key=lambda m: pid_of.get(m.metadata.src_node_id, m.metadata.src_node_id))
        answered = {m.metadata.src_node_id for m in replies}
        records, errors, up, wire_up = [], {}, 0, 0
        usable = []
        for msg in replies:
            k = pid_of.get(msg.metadata.src_node_id, msg.metadata.src_node_id)
            if msg.has_error():
                errors[k] = short_reason(msg.error.reason)
                records.append({"client": k, "failed": errors[k], "error_code": int(msg.error.code)})
                usable.append(msg)  # the strategy sees the error reply, as in Flower
                continue
            bad = _nonfinite(msg) if self.reject_nonfinite else []
            if bad:
                # as FederatedTrainer: one NaN/inf update would poison a mean (and FedAdam's moments) for good
                errors[k] = f"NonFiniteUpdate: non-finite values in {bad[:3]}; the update was rejected"
                records.append({"client": k, "failed": errors[k]})
                continue
            usable.append(msg)
            rec = {"client": k}
            for mr in msg.content.metric_records.values():
                rec.update({key: v for key, v in mr.items() if not isinstance(v, list)})
            records.append(rec)
            up += sum(array_bytes(a) for a in msg.content.array_records.values())
            wire_up += sum(wire_bytes(a) for a in msg.content.array_records.values())
        if self.record_client_params:
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
        with _seeded_global_rngs(derived_seed(self.config.seed, r - 1, 13)):
            new_arrays, train_metrics = self.strategy.aggregate_train(r, usable)
        aggregated = new_arrays is not None
        if aggregated:
            arrays = new_arrays
        ok = [rec for rec in records if "failed" not in rec]
        row: dict[str, Any] = {
            "round": r,
            "clients": sorted(pid_of.get(n, n) for n in sent),
            "failed_clients": sorted(errors),
            "timed_out_clients": sorted(pid_of.get(n, n) for n in sent if n not in answered),
            "aggregated": aggregated,
            "payload_bytes_up": up,
            "payload_bytes_down": down,
            "wire_bytes_up": wire_up,
            "train_loss": float(np.average([x["train_loss"] for x in ok], weights=[x["num-examples"] for x in ok]))
            if ok and all("train_loss" in x for x in ok)
            else None,
            "train_metrics": dict(train_metrics) if train_metrics is not None else {},
        }
        if errors:
            row["errors"] = {str(k): v for k, v in sorted(errors.items())}
        # the strategy's federated evaluation (clients' local data), when it asks for one
        with _seeded_global_rngs(derived_seed(self.config.seed, r - 1, 17)):
            emsgs = list(self.strategy.configure_evaluate(r, arrays, self.round_config(r, job), grid))
        if emsgs:
            ereplies = list(grid.send_and_receive(emsgs, timeout=self.round_timeout))
            agg = self.strategy.aggregate_evaluate(r, ereplies)
            row["evaluate_metrics"] = dict(agg) if agg is not None else {}
            row["evaluate_failed_clients"] = sorted(
                pid_of.get(m.metadata.src_node_id, m.metadata.src_node_id) for m in ereplies if m.has_error()
            )
        self.global_params = arrays_to_params(arrays, self.initial_params)
        if self.config.eval_every and r % self.config.eval_every == 0 and self.eval_datasets:
            load_params(self.client_trainer.model, self.global_params)
            for name, ds in self.eval_datasets.items():
                for metric, value in self.client_trainer.evaluate(ds).items():
                    row[f"eval_{name}_{metric}"] = value
        self.on_round_end(row, start, usable)
        row["seconds"] = time.time() - t0
        row["client_records"] = sorted(records, key=lambda x: x["client"])
        return arrays, row


# ---------------------------------------------------------------------- the Simulation Engine
def _check_simulation_extra() -> None:
    if importlib.util.find_spec("ray") is None:
        raise MissingExtraError(
            'Flower\'s Simulation Engine needs Ray (flwr[simulation]); install it with: pip install "hf-trust[flower]"'
        )


@contextlib.contextmanager
def _caller_pythonpath_kept() -> Iterator[None]:
    """Flower's Ray backend writes ``os.environ["PYTHONPATH"]`` of the calling process (to reach its workers);
    put the caller's value back afterwards so that later subprocesses of the caller see their own."""
    before = os.environ.get("PYTHONPATH")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def run_simulations(
    jobs: Sequence[tuple[FlowerFederation, Partitions]],
    backend_config: Optional[dict] = None,
    verbose: Optional[bool] = None,
    raise_errors: bool = True,
) -> list[list[dict[str, Any]]]:
    """Run several federations, one after the other, on one start of Flower's Simulation Engine.

    The engine starts one virtual SuperNode per client of the largest federation; a smaller one uses the SuperNodes
    of its partition ids and leaves the others idle.  Each job's client side (model, data, options) is written once to a temporary file that the Ray workers load and cache; the ``ClientApp`` Ray ships
    with every message only names that file.  Returns each federation's history (also in ``fed.history``).

    A job whose ServerApp raises does not stop the others: its exception is kept in ``fed.error`` and, with
    ``raise_errors``, the first one is raised once every job has run and the engine has shut down.
    """
    _check_simulation_extra()
    from flwr.simulation import run_simulation

    if not jobs:
        return []
    num_supernodes = max(parts.num_clients for _, parts in jobs)
    for fed, parts in jobs:
        inner = getattr(fed.strategy, "strategy", fed.strategy)
        need = max(int(getattr(inner, "min_available_nodes", 1) or 1), int(getattr(inner, "min_train_nodes", 1) or 1))
        if need > parts.num_clients:
            raise HFTrustConfigError(
                f"{type(inner).__name__}(min_available_nodes / min_train_nodes = {need}) would wait forever for "
                f"{need} SuperNodes; the partition has {parts.num_clients} clients. Lower them."
            )
    verbose = any(fed.verbose for fed, _ in jobs) if verbose is None else verbose
    import cloudpickle

    tmp = Path(tempfile.mkdtemp(prefix="hf_trust_flower_"))
    try:
        paths = []
        for i, (fed, parts) in enumerate(jobs):
            path = tmp / f"job{i}.pkl"
            with open(path, "wb") as f:
                cloudpickle.dump(fed.client_runtime(parts), f)
            paths.append(str(path))
        server_app = ServerApp()

        @server_app.main()
        def _main(grid: Grid, context: Context) -> None:
            for (fed, parts), path in zip(jobs, paths):
                fed.error = None
                try:
                    fed.serve(grid, context, job=path, num_clients=parts.num_clients, partitions=parts)
                except Exception as exc:  # the next federation still runs; raised below
                    logger.error("federation %s failed: %s", type(fed).__name__, exc)
                    fed.error = exc

        client_app = build_client_app(None)
        with _flower_log_level(verbose), _caller_pythonpath_kept():
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_supernodes,
                backend_config=backend_config or default_backend_config(),
                verbose_logging=verbose,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    errors = [fed.error for fed, _ in jobs if fed.error is not None]
    if errors and raise_errors:
        raise errors[0]
    return [fed.history for fed, _ in jobs]
