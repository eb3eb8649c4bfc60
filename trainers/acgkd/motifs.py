"""Synthetic "nitro-motif molecules" whose label is purely structural (spec section e).

Every graph: a 6-ring of C, a C chain (0–4) on it, 0–2 halogens, exactly one N and two O (7 atom types:
C, N, O, F, Cl, Br, S), so atom counts cannot solve the task.
* 2 classes: 0 = one O on N + one O on a carbon; 1 = both O on N (nitro-like).
* 3 classes (the harder variant): adds 2 = both O on carbons (hydroxyls) and the N elsewhere, with
  more carbons (chain 4–14) and a distractor S.
"""

from __future__ import annotations

import random

import torch

from hf_trust.errors import HFTrustConfigError

ATOMS = ("C", "N", "O", "F", "Cl", "Br", "S")


def _graph(label: int, rng: random.Random, hard: bool):
    from torch_geometric.data import Data

    atoms, edges = ["C"] * 6, [(i, (i + 1) % 6) for i in range(6)]
    carbons = list(range(6))
    prev = rng.randrange(6)
    for _ in range(rng.randint(4, 14) if hard else rng.randint(0, 4)):
        atoms.append("C")
        edges.append((prev, len(atoms) - 1))
        carbons.append(len(atoms) - 1)
        prev = len(atoms) - 1

    def add(sym: str, to: int) -> int:
        atoms.append(sym)
        edges.append((to, len(atoms) - 1))
        return len(atoms) - 1

    n = add("N", rng.choice(carbons))
    if label == 0:
        add("O", n)
        add("O", rng.choice(carbons))
    elif label == 1:
        add("O", n)
        add("O", n)
    else:
        add("O", rng.choice(carbons))
        add("O", rng.choice(carbons))
    for _ in range(rng.randint(0, 2)):
        add(rng.choice(("F", "Cl", "Br")), rng.choice(carbons))
    if hard:
        add("S", rng.choice(carbons))
    x = torch.zeros(len(atoms), len(ATOMS))
    x[torch.arange(len(atoms)), torch.tensor([ATOMS.index(a) for a in atoms])] = 1.0
    e = torch.tensor(edges, dtype=torch.long).t()
    return Data(x=x, edge_index=torch.cat([e, e.flip(0)], 1), y=torch.tensor([label]))


def make_motif_graphs(n: int, num_classes: int = 2, seed: int = 0) -> list:
    """``n`` balanced graphs (labels ``i mod num_classes``); ``num_classes=3`` is the harder variant."""
    if num_classes not in (2, 3):
        raise HFTrustConfigError(f"make_motif_graphs: num_classes must be 2 or 3, got {num_classes}.")
    rng = random.Random(seed)
    return [_graph(i % num_classes, rng, hard=num_classes == 3) for i in range(n)]


def train_teacher(
    model: torch.nn.Module, graphs: list, epochs: int = 30, lr: float = 1e-2, batch_size: int = 32, seed: int = 0
) -> torch.nn.Module:
    """Fit a graph classifier on real graphs (teacher pre-training; not part of the data-free path)."""
    import torch.nn.functional as F
    from torch_geometric.loader import DataLoader

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for b in DataLoader(graphs, batch_size=batch_size, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(model(b.x, b.edge_index, batch=b.batch), b.y.view(-1)).backward()
            opt.step()
    return model.eval()
