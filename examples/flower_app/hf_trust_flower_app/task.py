"""The federation this app runs: a small MLP classifier, ``num-clients`` clients (run config, default 2) with
Dirichlet label skew, FedAvg.

Every process that imports this module (the ServerApp, each SuperNode's ClientApp) builds the same synthetic data,
partition and initial model from the same seed, so no data file has to be shipped. A real deployment would give
``FlowerFederation.apps`` a loader ``(partition_id, context) -> dataset`` that reads each SuperNode's own data.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from datasets import Dataset
from flwr.serverapp.strategy import FedAvg

from hf_trust.trainers.federated import DirichletLabelPartitioner, FederatedConfig, SupervisedClientTrainer
from hf_trust.trainers.federated.flower import FlowerFederation

NUM_CLIENTS = 2  # default of the run config's num-clients; SuperNode k: --node-config "partition-id=k num-partitions=N"
SEED = 0
ROUNDS = 3


def num_clients(context) -> int:
    """The number of clients of this run: ``num-clients`` of the run config (the ServerApp and every SuperNode
    read the same value; a SuperNode whose num-partitions disagrees is refused by the handshake)."""
    return int(context.run_config.get("num-clients", NUM_CLIENTS))


def make_data(n: int = 400, d: int = 8, classes: int = 3, seed: int = SEED) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, d))[y] * 2 + rng.normal(size=(n, d))
    return Dataset.from_dict({"x": x.astype(np.float32).tolist(), "label": y.tolist()})


def fault_injection_mod(msg, context, call_next):
    """A Flower mod for demonstrating failures: a SuperNode started with ``--node-config "... fail-at-round=R"``
    raises in round R; the ServerApp records it and aggregates the others (Flower's semantics)."""
    fail = context.node_config.get("fail-at-round")
    if fail is not None:
        cfg = next(iter(msg.content.config_records.values()), {})
        if int(cfg.get("server-round", -1)) == int(fail):
            raise RuntimeError(f"injected fault on partition {context.node_config.get('partition-id')} in round {fail}")
    return call_next(msg, context)


@functools.lru_cache(maxsize=4)
def make_federation(
    rounds: int = ROUNDS, seed: int = SEED, num_clients: int = NUM_CLIENTS
) -> tuple[FlowerFederation, object]:
    data = make_data(seed=seed)
    parts = DirichletLabelPartitioner(num_clients=num_clients, alpha=0.5, min_size=20, seed=seed).split(data)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    fed = FlowerFederation(
        SupervisedClientTrainer(model, lr=0.05, batch_size=16),
        strategy=FedAvg(fraction_evaluate=0.0, min_train_nodes=num_clients, min_available_nodes=num_clients),
        config=FederatedConfig(rounds=rounds, seed=seed),
        eval_datasets={"all": data},
        client_mods=[fault_injection_mod],
        round_timeout=120.0,
    )
    return fed, parts
