"""Run under ``accelerate launch --num_processes P``: one federation and one statistics reduction; rank 0
saves the results to the path given as argv[1]."""

import sys

import torch

torch.set_num_threads(1)

from hf_trust.trainers.federated import (  # noqa: E402
    ClassMoments,
    DirichletLabelPartitioner,
    FedAvg,
    FederatedConfig,
    FederatedTrainer,
    reduce_moments,
)
from tests.federated.fed_fixtures import make_client_trainer, make_dataset  # noqa: E402


def main(out: str) -> None:
    ds = make_dataset()
    parts = DirichletLabelPartitioner(num_clients=5, alpha=0.5, min_size=5, seed=1).split(ds)
    trainer = FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig(rounds=3, local_epochs=1, seed=0))
    trainer.fit(parts)
    # statistics: each rank sums the clients it hosts, then one reduce in class chunks
    mine = ClassMoments.zeros(3, 6)
    for k in trainer.hosted(list(range(parts.num_clients))):
        sub = parts.client_dataset(k)
        mine = mine + ClassMoments.from_data(sub["x"], sub["label"], 3)
    total = reduce_moments(mine, trainer.reduce_sum, chunk_size=2)
    mu, cov = total.pooled()
    shared = trainer.broadcast_object({"rank0": trainer.rank})
    if trainer.accelerator.is_main_process:
        torch.save(
            {
                "params": trainer.global_params,
                "cov": cov,
                "mu": mu,
                "world": trainer.world,
                "broadcast": shared,
                "history": [r["clients"] for r in trainer.history],
            },
            out,
        )


if __name__ == "__main__":
    main(sys.argv[1])
