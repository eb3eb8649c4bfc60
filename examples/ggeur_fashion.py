"""GGEUR on frozen EfficientNet-Lite0 features of Fashion-MNIST, against FedAvg and the equal-count control.

    python examples/ggeur_fashion.py --alpha 0.1 --seeds 0 1 2

Embeds a class-balanced subset with the offline EfficientNet-Lite0, splits it over 10 clients with
Dirichlet label skew, and prints the final-round test accuracy of FedAvg on the real rows, FedAvg on rows
oversampled to GGEUR's per-class counts, and FedAvg with GGEUR's augmentation (mean ± std over seeds).
The demo (``hf-trust demo --methods ggeur``) runs the same comparison with more ablations and a cache.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from datasets import Dataset

from hf_trust import assets
from hf_trust.trainers.federated import DirichletLabelPartitioner, FedAvg, FederatedConfig
from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer


def embed(split: str, limit: int, size: int, model) -> Dataset:
    ds = assets.load_fashion_mnist(split, limit=limit, seed=0)
    images = np.stack([np.asarray(im) for im in ds["image"]])
    feats = assets.efficientnet_features(model, images, size=size)
    return Dataset.from_dict({"embedding": feats.tolist(), "label": list(ds["label"])})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)

    model = assets.load_efficientnet_lite0()
    train = embed("train", args.n_train, args.image_size, model)
    test = embed("test", args.n_test, args.image_size, model)
    print(f"fashion: {len(train)} train / {len(test)} test features")
    accs: dict[str, list[float]] = {"none": [], "oversample": [], "ggeur": []}
    for seed in args.seeds:
        parts = DirichletLabelPartitioner(
            num_clients=10, alpha=args.alpha, min_size=1, min_per_class=1, seed=seed
        ).split(train)
        for augment in accs:
            config = GGEURConfig(augment=augment, lr=1e-3, batch_size=64, per_sample=50, seed=seed)
            trainer = GGEURTrainer(
                config,
                FedAvg(),
                FederatedConfig(rounds=args.rounds, local_epochs=2, seed=seed),
                eval_datasets={"test": test},
            )
            accs[augment].append(trainer.fit(parts)[-1]["eval_test_accuracy"])
    for augment, values in accs.items():
        print(f"alpha={args.alpha} {augment:10s} {np.mean(values):.4f} ± {np.std(values):.4f} (n={len(values)})")


if __name__ == "__main__":
    main()
