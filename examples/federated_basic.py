"""A federation on the sklearn digits: Dirichlet label skew, FedAvg or FedProx, per-round accuracy.

    python examples/federated_basic.py --alpha 0.1 --rounds 20
    accelerate launch --config_file examples/accelerate_configs/cpu_2proc.yaml examples/federated_basic.py

One process and several processes give the same global model (clients are spread over the ranks).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from datasets import Dataset
from sklearn.datasets import load_digits

from hf_trust.trainers.federated import (
    DirichletLabelPartitioner,
    FederatedConfig,
    FederatedTrainer,
    SupervisedClientTrainer,
    get_strategy,
    plot_history,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--strategy", default="fedavg", help="fedavg, fedprox, fedadam")
    ap.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight")
    ap.add_argument("--output_dir", default="runs/federated_basic")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(x))
    train = Dataset.from_dict({"x": x[perm[:1300]].tolist(), "label": digits.target[perm[:1300]].tolist()})
    test = Dataset.from_dict({"x": x[perm[1300:]].tolist(), "label": digits.target[perm[1300:]].tolist()})

    parts = DirichletLabelPartitioner(num_clients=args.clients, alpha=args.alpha, min_size=10, seed=args.seed).split(
        train
    )
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    kwargs = {"mu": args.mu} if args.strategy == "fedprox" else {}
    trainer = FederatedTrainer(
        SupervisedClientTrainer(model, lr=0.05, batch_size=32),
        get_strategy(args.strategy, **kwargs),
        FederatedConfig(rounds=args.rounds, local_epochs=2, seed=args.seed, output_dir=args.output_dir),
        eval_datasets={"test": test},
    )
    history = trainer.fit(parts)
    if trainer.accelerator.is_main_process:
        print(parts.format_report())
        print(f"final test accuracy: {history[-1]['eval_test_accuracy']:.4f}")
        plot_history(history, f"{args.output_dir}/accuracy.png")


if __name__ == "__main__":
    main()
