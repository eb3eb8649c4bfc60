"""Flower as the engine of federations beyond one job (``pip install "hf-trust[flower]"``).

:class:`FlowerFederation` runs any :class:`~hf_trust.trainers.federated.ClientTrainer` of the federated core
as a real Flower app (flwr ≥ 1.42, Message API): a ``ClientApp`` whose ``train`` / ``evaluate`` handlers wrap
the client trainer, and a ``ServerApp`` that drives any Flower strategy (``flwr.serverapp.strategy.FedAvg``,
``FedProx``, ``FedAdam``, ``FedMedian``, ``Krum``, ``FedTrimmedAvg``, the differential-privacy wrappers ...) or
one of ours (:class:`~hf_trust.trainers.federated.Strategy`, adapted by :class:`HFTrustStrategy`).

Two ways to run it:

* ``fed.run_simulation(parts)``: Flower's Simulation Engine (Ray), one virtual SuperNode per client;
  :func:`run_simulations` runs several federations over one Ray start-up.
* ``client_app, server_app = fed.apps(parts)``: the real apps, for ``flwr run`` against a SuperLink and
  SuperNodes (the Deployment Engine); ``examples/flower_app`` is such an app.

The in-process :class:`~hf_trust.trainers.federated.FederatedTrainer` stays the reference: with the same model,
partition, seed and FedAvg/FedProx both give the same global parameters (to float32 round-off; bit for bit with
our strategies), because both drive the core's round steps (``trainers/federated/rounds.py``).  The modules here
are engine glue only: ``server`` (the ServerApp loop), ``handshake``, ``client`` (the ClientApp), ``simulation``
(the Ray driver), ``strategy`` (our strategies as Flower strategies), ``_records`` (records in and out).
Method-specific federations live beside their method: ``hf_trust.trainers.ggeur.flower.FlowerGGEUR`` (GGEUR's
statistics round as a Flower round carrying per-class statistics only) and
``hf_trust.trainers.fpl.flower.FlowerPromptFederation`` (only the prompts travel).  ``flwr_datasets`` partitioners convert both ways (``partitions_from_flwr`` / ``partitions_to_flwr``,
``dirichlet_from_flwr`` / ``dirichlet_to_flwr``; the α and seed semantics are in ``flower.datasets``).
"""

from __future__ import annotations

# ruff: noqa: E402  (the extra is checked before the submodules that need it are imported)
from hf_trust.errors import require_extra

# the extra: a clear error naming the module that failed instead of a bare ModuleNotFoundError deep inside
# (flwr.app: flwr >= 1.20's Message API; the project needs flwr >= 1.42 with the Ray simulation backend)
require_extra("flwr", extra="flower", feature="hf_trust.trainers.federated.flower")
require_extra("flwr.app", extra="flower", feature="hf_trust.trainers.federated.flower")

from ._records import NUM_EXAMPLES_KEY, UNIT_WEIGHT_KEY, arrays_to_params, params_to_arrays
from .client import ClientRuntime
from .server import FlowerFederation
from .simulation import default_backend_config, run_simulations
from .strategy import HFTrustStrategy, as_flower_strategy

# flwr_datasets (and the datasets stack it imports) only when its interop is used: a SuperNode process that
# only trains should not pay for it.
_LAZY = {
    "PartitionsPartitioner",
    "dirichlet_from_flwr",
    "dirichlet_to_flwr",
    "partitions_from_flwr",
    "partitions_to_flwr",
}


def __getattr__(name: str):
    if name in _LAZY:
        from . import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NUM_EXAMPLES_KEY",
    "UNIT_WEIGHT_KEY",
    "ClientRuntime",
    "FlowerFederation",
    "HFTrustStrategy",
    "PartitionsPartitioner",
    "arrays_to_params",
    "as_flower_strategy",
    "default_backend_config",
    "dirichlet_from_flwr",
    "dirichlet_to_flwr",
    "params_to_arrays",
    "partitions_from_flwr",
    "partitions_to_flwr",
    "run_simulations",
]
