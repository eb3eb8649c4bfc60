"""Small data and models shared by the federated tests (also imported by the multi-process script)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset

from hf_trust.trainers.federated import SupervisedClientTrainer


def make_dataset(n: int = 240, d: int = 6, classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = rng.normal(size=(classes, d)) * 2
    x = centers[y] + rng.normal(size=(n, d))
    domain = np.where(np.arange(n) % 2 == 0, "a", "b")
    return Dataset.from_dict({"x": x.astype(np.float32).tolist(), "label": y.tolist(), "domain": domain.tolist()})


def make_client_trainer(d: int = 6, classes: int = 3, seed: int = 0, **kw) -> SupervisedClientTrainer:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, classes))
    kw.setdefault("lr", 0.05)
    kw.setdefault("batch_size", 16)
    return SupervisedClientTrainer(model, **kw)
