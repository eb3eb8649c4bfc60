"""PyG models that accept soft edge weights: the "weighted-edge teacher" contract of ACGKD.

A teacher usable by :class:`~hf_trust.trainers.acgkd.ACGKDTrainer` must

* take ``forward(x, edge_index, edge_weight=None, batch=None) -> logits`` (soft pseudo-edges reach the
  structure only through ``edge_weight``; PyG's ``GINConv`` has no such argument, pyg #8708), and
* expose ``encode(...) -> node embeddings``, ``readout(h, batch) -> graph embeddings``, ``classifier``
  (an ``nn.Linear``) and ``hidden_dim``, so that the student can reuse the teacher's head (spec B3).

:class:`GNNClassifier` (weighted GIN or GCN, BatchNorm, sum pooling) satisfies both.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_geometric.nn import GATConv, GCNConv, MessagePassing, global_add_pool, global_max_pool, global_mean_pool

from hf_trust.errors import HFTrustConfigError, HFTrustStateError, HFTrustTypeError

READOUTS = {"sum": global_add_pool, "mean": global_mean_pool, "max": global_max_pool}


class WeightedGINConv(MessagePassing):
    """GIN layer with message ``w_ij · x_j``; with all weights 1 it equals PyG's ``GINConv``."""

    def __init__(self, in_dim: int, out_dim: int, train_eps: bool = False):
        super().__init__(aggr="add")
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))
        self.eps = nn.Parameter(torch.zeros(1), requires_grad=train_eps)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: Optional[torch.Tensor] = None):
        if edge_weight is None:
            edge_weight = x.new_ones(edge_index.size(1))
        agg = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        return self.mlp((1 + self.eps) * x + agg)

    def message(self, x_j: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
        return edge_weight.view(-1, 1) * x_j


class GNNClassifier(nn.Module):
    """Graph classifier: ``num_layers`` × (conv → BatchNorm → ReLU), a readout and a linear head.

    Args:
        in_dim: node-feature width.
        hidden_dim: width of every layer (``d_T`` for a teacher, ``d_S`` for a student).
        num_classes: classes of the linear head; ``None`` builds an encoder only (a lifted ACGKD student
            classifies with the teacher's head).
        num_layers: message-passing layers.
        conv: ``"gin"`` (weighted GIN) or ``"gcn"`` (``GCNConv`` with edge weights).
        readout: ``"sum"`` (GFKD's choice), ``"mean"`` or ``"max"``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        num_classes: Optional[int],
        num_layers: int = 3,
        conv: str = "gin",
        readout: str = "sum",
    ):
        super().__init__()
        if conv not in ("gin", "gcn"):
            raise HFTrustConfigError(f"conv must be 'gin' or 'gcn', got {conv!r}.")
        if readout not in READOUTS:
            raise HFTrustConfigError(f"readout must be one of {sorted(READOUTS)}, got {readout!r}.")
        self.in_dim, self.hidden_dim, self.num_classes = in_dim, hidden_dim, num_classes
        self.conv_type, self.readout_type = conv, readout
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        for i in range(num_layers):
            d_in = in_dim if i == 0 else hidden_dim
            self.convs.append(WeightedGINConv(d_in, hidden_dim) if conv == "gin" else GCNConv(d_in, hidden_dim))
            self.norms.append(nn.BatchNorm1d(hidden_dim))
        self.classifier = nn.Linear(hidden_dim, num_classes) if num_classes else None

    def encode(self, x, edge_index, edge_weight=None, batch=None) -> torch.Tensor:
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h, edge_index, edge_weight)))
        return h

    def readout(self, h: torch.Tensor, batch: Optional[torch.Tensor]) -> torch.Tensor:
        if batch is None:
            batch = h.new_zeros(h.size(0), dtype=torch.long)
        return READOUTS[self.readout_type](h, batch)

    def forward(self, x, edge_index, edge_weight=None, batch=None) -> torch.Tensor:
        if self.classifier is None:
            raise HFTrustStateError(
                "This GNNClassifier was built with num_classes=None (an encoder); wrap it in a "
                "LiftedStudent or build it with num_classes to classify."
            )
        return self.classifier(self.readout(self.encode(x, edge_index, edge_weight, batch), batch))


def check_weighted_teacher(teacher: nn.Module, need_head: bool = True) -> None:
    """Fail loudly when ``teacher`` cannot consume soft edges or does not expose a reusable head."""
    params = inspect.signature(teacher.forward).parameters
    if "edge_weight" not in params:
        raise HFTrustTypeError(
            f"{type(teacher).__name__}.forward has no `edge_weight` argument, so soft pseudo-edges cannot reach "
            "it and the structure would get no gradient. Use trainers.acgkd.GNNClassifier (weighted GIN/GCN) or "
            "add `edge_weight=None` to forward and multiply messages by it (PyG's GINConv cannot, pyg #8708)."
        )
    if need_head:
        missing = [a for a in ("encode", "readout", "classifier", "hidden_dim") if not hasattr(teacher, a)]
        if missing or not isinstance(getattr(teacher, "classifier", None), nn.Linear):
            raise HFTrustTypeError(
                f"Reusing the teacher's classifier needs `encode`, `readout`, `classifier` (nn.Linear) and "
                f"`hidden_dim` on the teacher; {type(teacher).__name__} lacks {missing or ['an nn.Linear classifier']}."
                " Use GNNClassifier, or set reuse_teacher_head=False and give the student its own head."
            )


class LiftedStudent(nn.Module):
    """Spec B3: ``z_S = h_T(R_T(P(f_S(X, A, w); A, w)))`` with ``P = GATConv(d_S → d_T, edge_dim=1)``.

    ``head`` *is* the teacher's classifier object (shared, frozen); only ``encoder`` and ``proj`` train.
    """

    def __init__(self, encoder: nn.Module, teacher: nn.Module):
        super().__init__()
        check_weighted_teacher(teacher)
        self.encoder = encoder
        self.proj = GATConv(encoder.hidden_dim, teacher.hidden_dim, heads=1, edge_dim=1)
        self.teacher_readout = teacher.readout
        self.head = teacher.classifier
        for p in self.head.parameters():
            p.requires_grad_(False)

    def embed(self, x, edge_index, edge_weight=None, batch=None) -> torch.Tensor:
        if edge_weight is None:
            edge_weight = x.new_ones(edge_index.size(1))
        h = self.encoder.encode(x, edge_index, edge_weight, batch)
        return self.proj(h, edge_index, edge_attr=edge_weight.view(-1, 1))

    def forward(self, x, edge_index, edge_weight=None, batch=None) -> torch.Tensor:
        return self.head(self.teacher_readout(self.embed(x, edge_index, edge_weight, batch), batch))

    def deployed_parameters(self) -> int:
        """Size of what ships: ``f_S + P + h_T``."""
        return sum(p.numel() for m in (self.encoder, self.proj, self.head) for p in m.parameters())
