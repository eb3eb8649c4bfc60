"""Overhead of the federated core.

1. Wall time of one round of N clients in one process / the sum of the same clients' local training
   alone (goal ≤ 1.15×: what the core adds — sampling, parameter copies, aggregation, bookkeeping).
2. Scaling: time per round with 100 and 500 simulated clients of a small model.

Run: ``python benchmarks/federated_bench.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

torch.set_num_threads(1)


from hf_trust.trainers.federated import (  # noqa: E402
    ClientContext,
    FedAvg,
    FederatedConfig,
    FederatedTrainer,
    IIDPartitioner,
    SupervisedClientTrainer,
    derived_seed,
)


def make(n: int, d: int = 32, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, d)).astype(np.float32) + y[:, None] * 0.1
    # in-memory columns: the same access cost for the core and for the baseline
    return {"x": torch.from_numpy(x), "label": torch.from_numpy(y)}


class _DictParts:
    def __init__(self, data, parts):
        self.data, self.parts = data, parts
        self.num_clients = parts.num_clients

    def client_dataset(self, k):
        ix = torch.from_numpy(self.parts.indices[k])
        return {c: v[ix] for c, v in self.data.items()}

    def save(self, path):
        pass


def model(d=32, classes=10):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))


def one_round(num_clients: int, rows_per_client: int) -> tuple[float, float]:
    data = make(num_clients * rows_per_client)
    parts = _DictParts(data, IIDPartitioner(num_clients=num_clients).split(data["label"].numpy()))
    trainer = FederatedTrainer(
        SupervisedClientTrainer(model(), lr=0.05, batch_size=32),
        FedAvg(),
        FederatedConfig(rounds=1, seed=0, eval_every=0),
    )
    t0 = time.perf_counter()
    trainer.fit(parts)
    fed = time.perf_counter() - t0
    # baseline: the same local trainings, called directly, nothing else
    alone = SupervisedClientTrainer(model(), lr=0.05, batch_size=32)
    start = {n: p.detach().clone() for n, p in alone.model.named_parameters()}
    t0 = time.perf_counter()
    for k in range(num_clients):
        with torch.no_grad():
            for n, p in alone.model.named_parameters():
                p.copy_(start[n])
        seed = derived_seed(0, 0, k)
        alone.fit(
            ClientContext(k, 0, parts.client_dataset(k), {}, {}, FedAvg(), 1, torch.Generator().manual_seed(seed))
        )
    base = time.perf_counter() - t0
    return fed, base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    one_round(4, 8)  # warm-up: first-call costs of torch, accelerate and tqdm are not the core's
    ratios = []
    for _ in range(args.repeats):
        fed, base = one_round(20, 64)
        ratios.append(fed / base)
    print(
        f"round of 20 clients / sum of their local training: median {statistics.median(ratios):.3f}x "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {args.repeats} repeats)"
    )
    for n in (100, 500):
        fed, base = one_round(n, 16)
        print(f"{n} clients x 16 rows: round {fed:.2f} s, local training alone {base:.2f} s, ratio {fed / base:.3f}x")


if __name__ == "__main__":
    main()
