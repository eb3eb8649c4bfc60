"""B1: the pseudo-graph bank — node-feature logits and Binary-Concrete edge logits on a ξ-share of pairs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from hf_trust.errors import HFTrustConfigError


@dataclass
class GraphBatch:
    """A batch of (pseudo-)graphs in PyG layout; ``edge_weight`` carries the soft or hard edges."""

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_weight: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    def detach(self) -> GraphBatch:
        return GraphBatch(self.x.detach(), self.edge_index, self.edge_weight.detach(), self.batch, self.num_graphs)

    def to(self, device) -> GraphBatch:
        return GraphBatch(
            self.x.to(device),
            self.edge_index.to(device),
            self.edge_weight.to(device),
            self.batch.to(device),
            self.num_graphs,
        )

    def inputs(self) -> tuple:
        return self.x, self.edge_index, self.edge_weight, self.batch


class PseudoGraphBank(nn.Module):
    """``M`` learnable pseudo-graphs.

    Graph g has ``n_g ~ U[n_min, n_max]`` nodes, feature logits ``Z_g`` (``X = softmax(Z)``) and edge logits
    ``θ`` on a fixed candidate set ``P_g`` of ``max(n_g, ⌈ξ·n_g(n_g−1)/2⌉)`` pairs — our reading of the paper's
    spatial-complexity parameter ξ: pairs outside ``P_g`` can never become edges, so memory is O(ξn²).

    Args:
        num_graphs: ``M``.
        feat_dim: node-feature width ``F`` (the teacher's input width).
        n_range: ``(n_min, n_max)`` inclusive.
        xi: share of node pairs that get an edge parameter, in (0, 1].
        target_mean_degree: θ is initialised so the expected mean degree is this value **[ours]** (a constant
            θ would confound ξ with density); ``None`` uses ``init_logit`` for every pair.
        init_logit: constant θ init when ``target_mean_degree`` is ``None``.
        candidates: ``"ring"`` seeds ``P_g`` with a ring so every graph can be connected, ``"random"`` draws
            all pairs at random **[ours]**.
        feature_mode: ``"softmax"`` (categorical one-hot inputs, e.g. atoms) or ``"degree"``: a soft binning of
            the sampled soft degree into ``F`` bins, for datasets whose features are degree one-hots **[ours]**.
        seed: seeds sizes, pairs and initial values.
    """

    def __init__(
        self,
        num_graphs: int,
        feat_dim: int,
        n_range: Sequence[int] = (10, 29),
        xi: float = 0.3,
        target_mean_degree: Optional[float] = 2.0,
        init_logit: float = -1.0,
        candidates: str = "ring",
        feature_mode: str = "softmax",
        seed: int = 0,
    ):
        super().__init__()
        n_min, n_max = int(n_range[0]), int(n_range[1])
        _check_bank_settings(num_graphs, n_min, n_max, xi, candidates, feature_mode)
        self.num_graphs, self.feat_dim, self.xi, self.feature_mode = num_graphs, feat_dim, xi, feature_mode
        g = torch.Generator().manual_seed(seed)
        sizes = torch.randint(n_min, n_max + 1, (num_graphs,), generator=g)
        pairs, owner, thetas = [], [], []
        offset = 0
        for gid, n in enumerate(sizes.tolist()):
            p = _candidate_pairs(n, xi, candidates, g) + offset
            pairs.append(p)
            owner.append(torch.full((p.size(1),), gid))
            thetas.append(torch.full((p.size(1),), _initial_logit(n, p.size(1), target_mean_degree, init_logit)))
            offset += n
        self.register_buffer("num_nodes", sizes)
        self.register_buffer("node_ptr", torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]))
        pair_counts = torch.tensor([p.size(1) for p in pairs])
        self.register_buffer("pair_ptr", torch.cat([torch.zeros(1, dtype=torch.long), pair_counts.cumsum(0)]))
        self.register_buffer("pairs", torch.cat(pairs, 1))
        self.register_buffer("pair_graph", torch.cat(owner))
        self.z = nn.Parameter(torch.randn(offset, feat_dim, generator=g))
        self.theta = nn.Parameter(torch.cat(thetas))

    # ------------------------------------------------------------------ selection
    def _gather(self, idx: torch.Tensor):
        idx = idx.to(self.node_ptr.device)
        n = self.num_nodes[idx]
        node_ids = torch.cat(
            [
                torch.arange(s, e, device=n.device)
                for s, e in zip(self.node_ptr[idx].tolist(), self.node_ptr[idx + 1].tolist())
            ]
        )
        pair_ids = torch.cat(
            [
                torch.arange(s, e, device=n.device)
                for s, e in zip(self.pair_ptr[idx].tolist(), self.pair_ptr[idx + 1].tolist())
            ]
        )
        # Re-index global node ids into the batch: local = global - node_ptr[g] + new_ptr[g].
        new_ptr = torch.cat([n.new_zeros(1), n.cumsum(0)])
        pos = torch.empty(self.num_graphs, dtype=torch.long, device=n.device)
        pos[idx] = torch.arange(idx.numel(), device=n.device)
        shift = (new_ptr[:-1] - self.node_ptr[idx])[pos[self.pair_graph[pair_ids]]]
        local_pairs = self.pairs[:, pair_ids] + shift
        batch = torch.repeat_interleave(torch.arange(idx.numel(), device=n.device), n)
        return node_ids, pair_ids, local_pairs, batch

    def edge_probs(self) -> torch.Tensor:
        return torch.sigmoid(self.theta)

    def concrete(self, theta: torch.Tensor, temperature: float, generator: Optional[torch.Generator] = None):
        """Binary Concrete: ``w = σ((θ + log u − log(1−u)) / λ)``, u ~ U(0,1) (logistic = difference of Gumbels)."""
        u = torch.rand(theta.shape, generator=generator, device=theta.device).clamp(1e-6, 1 - 1e-6)
        return torch.sigmoid((theta + torch.log(u) - torch.log1p(-u)) / temperature)

    def sample(
        self,
        idx: Optional[torch.Tensor] = None,
        temperature: float = 0.5,
        mode: str = "concrete",
        generator: Optional[torch.Generator] = None,
        theta: Optional[torch.Tensor] = None,
    ) -> GraphBatch:
        """Graphs ``idx`` (default all) as a :class:`GraphBatch`.

        ``mode``: ``"concrete"`` (soft sample), ``"hard"`` (``1[θ>0]``, export/eval), ``"straight_through"``
        (hard forward, Concrete backward) or ``"fixed"`` (use the given per-pair ``theta`` values as weights;
        the GFKD-ARM baseline passes its Bernoulli draws this way).
        """
        if idx is None:
            idx = torch.arange(self.num_graphs)
        idx = torch.as_tensor(idx, dtype=torch.long)
        node_ids, pair_ids, local_pairs, batch = self._gather(idx)
        th = self.theta[pair_ids]
        if mode == "concrete":
            w = self.concrete(th, temperature, generator)
        elif mode == "hard":
            w = (th > 0).to(th.dtype)
        elif mode == "straight_through":
            soft = self.concrete(th, temperature, generator)
            w = (soft > 0.5).to(th.dtype) + soft - soft.detach()
        elif mode == "fixed":
            if theta is None:
                raise HFTrustConfigError("mode='fixed' needs `theta` (one weight per candidate pair of the batch).")
            w = theta
        else:
            raise HFTrustConfigError(f"mode must be concrete/hard/straight_through/fixed, got {mode!r}.")
        edge_index = torch.cat([local_pairs, local_pairs.flip(0)], 1)  # undirected: mirror every pair
        edge_weight = torch.cat([w, w])
        x = self.features(node_ids, edge_index, edge_weight)
        return GraphBatch(x, edge_index, edge_weight, batch, int(idx.numel()))

    def pair_ids(self, idx: torch.Tensor) -> torch.Tensor:
        return self._gather(torch.as_tensor(idx, dtype=torch.long))[1]

    def features(self, node_ids: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor) -> torch.Tensor:
        if self.feature_mode == "softmax":
            return F.softmax(self.z[node_ids], dim=-1)
        # Soft degree one-hot: a Gaussian-kernel softmax over degree bins 0..F-1 keeps degree differentiable.
        deg = torch.zeros(node_ids.numel(), device=edge_weight.device).index_add(0, edge_index[0], edge_weight)
        bins = torch.arange(self.feat_dim, device=deg.device, dtype=deg.dtype)
        return F.softmax(-((deg.view(-1, 1) - bins) ** 2) / 0.5, dim=-1)

    def num_bank_parameters(self) -> int:
        return self.z.numel() + self.theta.numel()

    def to_data_list(self, idx: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None) -> list:
        """Export hard graphs (``1[θ>0]``, argmax features) as PyG ``Data`` objects."""
        from torch_geometric.data import Data

        idx = torch.arange(self.num_graphs) if idx is None else torch.as_tensor(idx)
        out = []
        with torch.no_grad():
            for _j, g in enumerate(idx.tolist()):
                b = self.sample(torch.tensor([g]), mode="hard")
                keep = b.edge_weight > 0
                x = F.one_hot(b.x.argmax(-1), self.feat_dim).float()
                d = Data(x=x, edge_index=b.edge_index[:, keep])
                if labels is not None:
                    d.y = labels[g].view(1)
                out.append(d)
        return out


def _check_bank_settings(num_graphs: int, n_min: int, n_max: int, xi: float, candidates: str, feature_mode: str):
    if not 0.0 < xi <= 1.0:
        raise HFTrustConfigError(f"xi must be in (0, 1] (the share of node pairs that may become edges), got {xi}.")
    if n_min < 2 or n_max < n_min:
        raise HFTrustConfigError(f"n_range must satisfy 2 <= n_min <= n_max, got {(n_min, n_max)}.")
    if candidates not in ("ring", "random"):
        raise HFTrustConfigError(f"candidates must be 'ring' or 'random', got {candidates!r}.")
    if feature_mode not in ("softmax", "degree"):
        raise HFTrustConfigError(f"feature_mode must be 'softmax' or 'degree', got {feature_mode!r}.")
    if num_graphs < 1:
        raise HFTrustConfigError(f"num_graphs must be >= 1, got {num_graphs}.")


def _candidate_pairs(n: int, xi: float, candidates: str, g: torch.Generator) -> torch.Tensor:
    """The ``max(n, ⌈ξ·n(n−1)/2⌉)`` node pairs of an ``n``-node graph that get an edge logit, as a (2, k) tensor
    of local node ids; ``"ring"`` always includes the n ring edges, so every pseudo-graph can be connected."""
    iu = torch.triu_indices(n, n, offset=1)
    total = iu.size(1)
    k = min(total, max(n, math.ceil(xi * total)))
    all_id = iu[0] * n + iu[1]
    if candidates == "ring":
        ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n]).sort(0).values
        ring_id = (ring[0] * n + ring[1]).unique()
        rest = all_id[~torch.isin(all_id, ring_id)]
        rest = rest[torch.randperm(rest.numel(), generator=g)[: max(0, k - ring_id.numel())]]
        chosen = torch.cat([ring_id, rest])
    else:
        chosen = all_id[torch.randperm(total, generator=g)[:k]]
    return torch.stack([chosen // n, chosen % n])


def _initial_logit(n: int, num_pairs: int, target_mean_degree: Optional[float], init_logit: float) -> float:
    """θ at init: the logit whose edge probability gives ``target_mean_degree`` on average, else ``init_logit``."""
    if target_mean_degree is None:
        return float(init_logit)
    # E[mean degree] = 2·Σp/n; with one p per graph: p = d·n / (2·|P_g|).
    prob = min(max(target_mean_degree * n / (2.0 * num_pairs), 1e-3), 1 - 1e-3)
    return math.log(prob / (1 - prob))
