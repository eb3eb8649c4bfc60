"""Embedding data for GGEUR tests (standardised sklearn digits stand in for frozen encoder features)."""

from __future__ import annotations

import numpy as np
from datasets import Dataset


def digit_embeddings(n_train: int = 900, seed: int = 0, domains: bool = False):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data - d.data.mean(0)) / (d.data.std(0) + 1e-6)
    y = d.target
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, te = perm[:n_train], perm[n_train:]
    cols = {"embedding": x[tr].tolist(), "label": y[tr].tolist()}
    test = {"embedding": x[te].tolist(), "label": y[te].tolist()}
    if domains:
        # three synthetic "domains": shifted copies of the features
        shift = np.random.default_rng(1).normal(size=(3, x.shape[1])) * 2
        dom = np.arange(len(tr)) % 3
        cols["embedding"] = (x[tr] + shift[dom]).tolist()
        cols["domain"] = [f"d{i}" for i in dom]
    return Dataset.from_dict(cols), Dataset.from_dict(test)
