"""Per-layer math of ThanoRA: spectral entropy, rank split, task-block initialisation and the regulariser.

Layout of one adapted layer of LoRA rank r with T tasks (rows of A, columns of B)::

    [ task 1 (r_1) | task 2 (r_2) | … | task T (r_T) | cooperative (c) ]      Σ_t r_t + c = r

ΔW = s·(Σ_t B_t A_t + B_c A_c) = s·BA.  The adapted layer itself is PEFT's ``lora.Linear`` unchanged (the
blocks are metadata on it), so forward, merge and export are exactly those of LoRA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch

from hf_trust.errors import HFTrustConfigError

Slices = list[tuple[int, int]]


def normalized_sv_entropy(sigma: torch.Tensor, k: Optional[int] = None) -> float:
    """H = −Σ p_i log p_i / log k with p = σ/Σσ (Roy & Vetterli's effective rank, normalised to [0, 1]).

    ``k`` is the number of singular values the matrix can have (min of its dims); it defaults to ``len(σ)``.
    """
    s = sigma.detach().double().clamp_min(0)
    k = int(k or s.numel())
    total = s.sum()
    if k < 2 or total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(-(p * p.log()).sum() / math.log(k))


def _round_with_minimum(weights: torch.Tensor, r: int, r_min: int) -> list[int]:
    """Largest-remainder rounding of ``weights·(r − T·r_min)`` plus ``r_min`` each: integers, Σ = r exactly."""
    t = weights.numel()
    if r < t * r_min:
        raise HFTrustConfigError(
            f"rank {r} cannot give {t} tasks ≥ {r_min} rank(s) each; raise r or lower min_rank_per_task."
        )
    # Reserve the minimum first, then share the rest proportionally: keeps Σ = r exactly.
    free = r - t * r_min
    quota = weights * free
    ranks = quota.floor().long()
    left = free - int(ranks.sum())
    order = torch.argsort(quota - ranks, descending=True, stable=True)
    ranks[order[:left]] += 1
    return [int(x) + r_min for x in ranks]


def allocate_ranks(entropies: Sequence[float], r: int, temperature: float = 1.0, r_min: int = 1) -> list[int]:
    """The ``"entropy"`` rule: split ``r`` over tasks ∝ H_t^τ, largest-remainder rounded, each ≥ ``r_min``.

    Example: H = (0.40, 0.60), r = 32 → [13, 19].  Normalised entropies of real tasks differ by a few
    hundredths, so this rule is close to uniform at τ = 1.
    """
    w = torch.tensor([max(float(h), 0.0) for h in entropies], dtype=torch.float64) ** temperature
    w = torch.full_like(w, 1.0 / len(w)) if w.sum() <= 0 else w / w.sum()
    return _round_with_minimum(w, r, r_min)


def softmax_weights(entropies: Sequence[float], temperature: float, scale: float = 1.0) -> torch.Tensor:
    """w_t = (1 − γ)/T + γ·softmax_t(H_t / τ)  (τ = ``temperature``, γ = ``scale`` ∈ [0, 1]).

    A reconstruction: the paper names a temperature and a scaling factor for its entropy-driven split but
    its equation was not available.  τ sets how sharply entropy differences turn into rank differences
    (τ → ∞: uniform; τ → 0: the most complex task takes everything above the minimum); γ sets how much of
    the budget follows the entropies at all (γ = 0: uniform).  Equal entropies give equal weights for any
    τ, γ.
    """
    h = torch.tensor([float(x) for x in entropies], dtype=torch.float64)
    soft = torch.softmax(h / float(temperature), dim=0)
    return (1.0 - scale) / h.numel() + scale * soft


def softmax_allocation(
    entropies: Sequence[float], r: int, temperature: float = 0.05, scale: float = 1.0, r_min: int = 1
) -> list[int]:
    """The ``"softmax"`` rule: r_t = r_min + LRR(w_t · (r − T·r_min)) with w from :func:`softmax_weights`.

    LRR is largest-remainder rounding (floors first, then one more rank to the largest remainders, ties
    in task order), so Σ_t r_t = r exactly.
    """
    return _round_with_minimum(softmax_weights(entropies, temperature, scale), r, r_min)


def uniform_ranks(r: int, n_tasks: int) -> list[int]:
    """r/T per task, the first ``r mod T`` tasks one more."""
    base, extra = divmod(r, n_tasks)
    return [base + (1 if i < extra else 0) for i in range(n_tasks)]


def ranks_to_slices(ranks: Sequence[int]) -> Slices:
    """Contiguous blocks in task order: [1, 7] → [(0, 1), (1, 8)]."""
    out, start = [], 0
    for r in ranks:
        out.append((start, start + int(r)))
        start += int(r)
    return out


def task_block_init(
    bases: Sequence[torch.Tensor],
    ranks: Sequence[int],
    orthogonal: bool = True,
    row_norm: float = 3**-0.5,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Stack the first ``r_t`` rows of each task basis (rows = right singular vectors) into A (r × d_in).

    With ``orthogonal`` the rows are Gram-Schmidt'ed in task order, so each block keeps the part of its task's
    subspace not already claimed by earlier tasks and the initial task subspaces are mutually orthogonal.
    A row that runs out (task basis shorter than its rank, or fully inside earlier blocks) is replaced by a
    random direction orthogonal to the rows before it.
    """
    d_in = bases[0].shape[1]
    rows: list[torch.Tensor] = []
    for basis, r in zip(bases, ranks):
        basis = basis.detach().double()
        for i in range(int(r)):
            v = basis[i].clone() if i < basis.shape[0] else torch.zeros(d_in, dtype=torch.float64)
            for _attempt in range(4):
                if orthogonal and rows:
                    prev = torch.stack(rows)
                    for _ in range(2):  # twice: classical Gram-Schmidt loses orthogonality once
                        v = v - prev.T @ (prev @ v)
                if v.norm() > 1e-6:
                    break
                v = torch.randn(d_in, dtype=torch.float64, generator=generator)
            rows.append(v / v.norm())
    return torch.stack(rows) * row_norm


def _unit_rows(m: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return m / (m.norm(dim=1, keepdim=True) + eps)


def _block_ids(slices: Slices, device) -> torch.Tensor:
    return torch.cat([torch.full((e - s,), i, device=device) for i, (s, e) in enumerate(slices)])


def subspace_terms(
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    slices: Slices,
    factors: str = "both",
    eps: float = 1e-8,
    with_intra: bool = True,
    normalize_B: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-block term, within-block term) of one layer, on the task blocks only.

    cross = Σ_{t<s} ‖Â_t Â_sᵀ‖²_F (if ``factors`` has A) + ‖B_tᵀ B_s‖²_F (if it has B; ‖B̂_tᵀ B̂_s‖²_F with unit
    columns when ``normalize_B``, see ``ThanoRAConfig.normalize_B``); within = Σ_t ‖Â_t Â_tᵀ − I‖²_F.
    Only the rows/columns covered by ``slices`` (the task blocks, which start at 0) enter: the cooperative block
    after them is exempt.  Computed on the task rows' Gram matrix with a block mask (one matmul per factor
    instead of T² small ones); each unordered pair appears twice in the symmetric Gram matrix, hence the halving.
    """
    n_task = slices[-1][1]
    ids = _block_ids(slices, lora_A.device)
    off = ids[:, None] != ids[None, :]
    a_hat = _unit_rows(lora_A[:n_task].float(), eps)
    gram_a = a_hat @ a_hat.T
    cross = gram_a.new_zeros(())
    if factors in ("both", "A"):
        cross = cross + gram_a.pow(2)[off].sum() / 2
    if factors in ("both", "B"):
        b_t = lora_B[:, :n_task].float().T
        # Plain columns by default: unit columns have a gradient ∝ 1/‖b‖, unbounded at LoRA's B = 0.
        b_hat = _unit_rows(b_t, eps) if normalize_B else b_t
        cross = cross + (b_hat @ b_hat.T).pow(2)[off].sum() / 2
    if not with_intra:
        return cross, cross.new_zeros(())
    eye = torch.eye(n_task, device=gram_a.device)
    intra = (gram_a - eye).pow(2)[~off].sum()
    return cross, intra


def covariance_basis(weight: torch.Tensor, cov: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` right singular vectors (as rows) and singular values of M = W·C (truncated SVD, CorDA-like).

    ``weight`` is W (d_out × d_in), ``cov`` the task's input covariance C = XᵀX/N (d_in × d_in).  The rows
    span the input directions along which the task's activations, seen through the frozen W, carry the most
    energy: the task-relevant input subspace the task block starts in.

    Computed from the eigen-decomposition of the smaller Gram matrix (MᵀM or MMᵀ, in float64): the same top
    singular vectors as a full SVD at a fraction of its cost for the wide and tall matrices of an MLP.  Only
    directions with a non-zero singular value are returned (fewer than ``k`` when M has lower rank).
    """
    m = weight.detach().double().cpu() @ cov.double()
    tall = m.shape[0] >= m.shape[1]
    evals, vecs = torch.linalg.eigh(m.T @ m if tall else m @ m.T)
    sigma = evals.flip(0).clamp_min(0).sqrt()
    vecs = vecs.flip(1)
    # Directions with σ ≈ 0 carry no task energy (and cannot be mapped back from the wide Gram matrix).
    n = min(int(k), int((sigma > sigma[0] * 1e-10).sum()) if sigma.numel() and sigma[0] > 0 else 0)
    v = vecs[:, :n].T if tall else (m.T @ vecs[:, :n] / sigma[:n]).T
    return v, sigma


def cross_block_cosine(m: torch.Tensor, slices: Slices, eps: float = 1e-8) -> float:
    """Mean |cos| between rows of different task blocks (a diagnostic of task interference)."""
    u = _unit_rows(m.detach().float(), eps)
    g = (u @ u.T).abs()
    vals = [g[a0:a1, b0:b1].flatten() for i, (a0, a1) in enumerate(slices) for b0, b1 in slices[i + 1 :]]
    return float(torch.cat(vals).mean()) if vals else 0.0
