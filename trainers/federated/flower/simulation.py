"""Flower's Simulation Engine (Ray) as the driver of one or several federations, and the process environment it
needs (Ray's resources, Flower's log level, the caller's ``PYTHONPATH``)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from hf_trust.errors import HFTrustConfigError, MissingExtraError

from ..partition import Partitions
from .client import build_client_app
from .server import FlowerFederation
from .strategy import wrapped_strategy

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
        inner = wrapped_strategy(fed.strategy)
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
