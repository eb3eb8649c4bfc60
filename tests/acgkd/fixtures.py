"""Shared pieces of the ACGKD tests: a motif task and a trained weighted-GIN teacher."""

from __future__ import annotations

import torch

from hf_trust.trainers.acgkd import ACGKDConfig, GNNClassifier, make_motif_graphs, train_teacher


def motif_teacher(seed: int = 0):
    """(teacher, test graphs): weighted GIN-4-64 trained on 300 motif graphs; its test accuracy is 1.0."""
    train = make_motif_graphs(300, 2, seed=seed)
    test = make_motif_graphs(200, 2, seed=seed + 100)
    torch.manual_seed(seed)
    teacher = train_teacher(GNNClassifier(7, 64, 2, 4, "gin"), train, epochs=20, seed=seed)
    return teacher, test


def small_args(tmp, **kw) -> ACGKDConfig:
    base = dict(
        output_dir=str(tmp),
        max_steps=300,
        gen_warmup_steps=150,
        num_pseudo_graphs=64,
        min_nodes=10,
        max_nodes=20,
        report_to="none",
        seed=0,
        disable_tqdm=True,
        save_strategy="no",
    )
    base.update(kw)
    return ACGKDConfig(**base)


def student(seed: int = 0) -> GNNClassifier:
    torch.manual_seed(seed)
    return GNNClassifier(7, 32, None, 2, "gin")
