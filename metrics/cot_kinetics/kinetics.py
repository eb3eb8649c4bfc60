"""CoT-Kinetics energy of a reasoning trace, computed while the model runs (plain torch).

RECONSTRUCTION.  The paper's method section (arXiv 2505.13408, §2.2) could not be read, so the energy
below is this project's reading of its abstract and outline, kept behind one replaceable function
(:func:`reconstructed_energy`).  Layer index = time; each generated token's hidden state is a particle:

* velocity            v_tˡ = h_tˡ⁺¹ − h_tˡ over the pre-norm states l = 0..L (decoder-layer hooks, so the
                       final norm never enters the dynamics — HF's last ``hidden_states`` entry is normed);
* kinetic term        K_t = mean_l ½·m_t·‖v_tˡ‖² / S_t²,  S_t = ‖h_tᴸ − h_t⁰‖ (scale-free), m_t = 1 or surprisal;
* curvature term      C_t = mean_l arccos cos(v_tˡ, v_tˡ⁺¹);
* potential term      U_t = mean_l −log softmax(W_U·norm(h_tˡ))[y_{t+1}] / log|V| (logit lens);
* energy              E_t = α·K_t + γ·C_t + β·U_t, sample energy = mean over the reasoning tokens.

Memory: forward hooks update per-token running sums layer by layer, so only the previous state and
velocity of the scored positions are kept (O(T·d)), never all layers at once; the logit lens runs only on
the scored positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from hf_trust.errors import KineticsError


# ------------------------------------------------------------------------------------------- model parts
@dataclass
class ModelParts:
    embeddings: nn.Module
    layers: Sequence[nn.Module]
    final_norm: Optional[nn.Module]
    lm_head: nn.Module


def locate_parts(model: nn.Module) -> ModelParts:
    """Embeddings, decoder layers, final norm and LM head of a transformers causal LM."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None) or getattr(model, "model", None)
    layers = None
    for owner in (base, getattr(base, "decoder", None), model):
        if owner is None:
            continue
        for name in ("layers", "h", "blocks"):
            cand = getattr(owner, name, None)
            if isinstance(cand, nn.ModuleList) and len(cand) > 0:
                layers = cand
                break
        if layers is not None:
            break
    norm = None
    for owner in (base, getattr(base, "decoder", None)):
        for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
            if owner is not None and isinstance(getattr(owner, name, None), nn.Module):
                norm = getattr(owner, name)
                break
        if norm is not None:
            break
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if layers is None or head is None or emb is None:
        raise KineticsError(
            f"{type(model).__name__} does not expose decoder layers, input embeddings and an LM head; "
            "CoT-Kinetics needs a causal language model (e.g. AutoModelForCausalLM)."
        )
    return ModelParts(emb, layers, norm, head)


# ------------------------------------------------------------------------------------------- segments
def find_subsequence(seq: Sequence[int], pattern: Sequence[int], start: int = 0) -> int:
    n = len(pattern)
    for i in range(start, len(seq) - n + 1):
        if list(seq[i : i + n]) == list(pattern):
            return i
    return -1


def reasoning_span(
    ids: Sequence[int], prompt_len: int, start_ids: Sequence[int], end_ids: Sequence[int], include_answer: bool = False
) -> tuple[int, int, str]:
    """``(first, last_exclusive, status)`` of the reasoning tokens inside the output part.

    Reasoning = tokens strictly between the think delimiters, searched only after the prompt (a prompt
    that mentions ``<think>`` does not count).  Without ``think_start`` the output begins the reasoning;
    without ``think_end`` (truncated generation) the whole output is scored and the status says so.
    """
    status = "ok"
    s = find_subsequence(ids, start_ids, prompt_len) if start_ids else -1
    first = s + len(start_ids) if s >= 0 else prompt_len
    if s < 0 and start_ids:
        status = "no_think_start"
    e = find_subsequence(ids, end_ids, first) if end_ids else -1
    if e < 0:
        last = len(ids)
        status = "no_think_end" if status == "ok" else "no_delimiters"
    else:
        last = len(ids) if include_answer else e
    return first, last, status


# ------------------------------------------------------------------------------------------- energy
@dataclass
class EnergyWeights:
    alpha: float = 1.0  # kinetic
    beta: float = 1.0  # potential
    gamma: float = 0.0  # curvature
    normalize: bool = True
    mass: str = "unit"  # "unit" or "surprisal"


def reconstructed_energy(
    kinetic: torch.Tensor, curvature: torch.Tensor, potential: torch.Tensor, w: EnergyWeights
) -> torch.Tensor:
    """E_t = α·K_t + γ·C_t + β·U_t (RECONSTRUCTED; replace this function once the paper's equation is known)."""
    return w.alpha * kinetic + w.gamma * curvature + w.beta * potential


@dataclass
class TraceScores:
    """Per-sample outputs of one scored trace."""

    energy: float
    kinetic: float
    curvature: float
    potential: float
    per_layer: list[float]
    segment_status: str
    n_reasoning_tokens: int
    baselines: dict[str, float] = field(default_factory=dict)


class _Accumulator:
    """Running per-token sums over layers for the scored positions of one batch row set."""

    def __init__(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        next_ids: torch.Tensor,
        parts: ModelParts,
        weights: EnergyWeights,
        lens_layers: Optional[set[int]],
        chunk: int = 256,
    ):
        self.rows, self.cols, self.next_ids = rows, cols, next_ids
        self.parts, self.w, self.lens_layers, self.chunk = parts, weights, lens_layers, chunk
        self.layer = 0
        self.h0 = self.h_prev = self.v_prev = None
        n = len(rows)
        self.kin_sum = torch.zeros(n, dtype=torch.float64)
        self.kin_layers: list[torch.Tensor] = []
        self.curv_sum = torch.zeros(n, dtype=torch.float64)
        self.curv_count = 0
        self.pot_sum = torch.zeros(n, dtype=torch.float64)
        self.pot_layers: list[Optional[torch.Tensor]] = []
        self.pot_count = 0
        self.log_v = math.log(parts.lm_head.weight.shape[0])
        # CoE baseline: mean over the output tokens of each sample at every layer
        self.coe_means: list[torch.Tensor] = []

    def _lens(self, h: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(h), dtype=torch.float64)
        for s in range(0, len(h), self.chunk):
            x = h[s : s + self.chunk]
            if self.parts.final_norm is not None:
                x = self.parts.final_norm(x.to(self.parts.lm_head.weight.dtype))
            logits = self.parts.lm_head(x.to(self.parts.lm_head.weight.dtype)).float()
            out[s : s + self.chunk] = (
                -torch.log_softmax(logits, -1).gather(1, self.next_ids[s : s + self.chunk, None])[:, 0].double()
            )
        return out / self.log_v

    def observe(self, hidden: torch.Tensor, coe_index: Sequence[torch.Tensor]) -> None:
        h = hidden[self.rows, self.cols].double()
        self.coe_means.append(torch.stack([hidden[b, ix].double().mean(0) for b, ix in enumerate(coe_index)]))
        if self.lens_layers is None or self.layer in self.lens_layers:
            pot = self._lens(h.float())
            self.pot_sum += pot
            self.pot_count += 1
            self.pot_layers.append(pot)
        else:
            self.pot_layers.append(None)
        if self.h_prev is None:
            self.h0 = h
        else:
            v = h - self.h_prev
            ke = 0.5 * (v * v).sum(-1)
            self.kin_layers.append(ke)
            self.kin_sum += ke
            if self.v_prev is not None:
                cos = nn.functional.cosine_similarity(v, self.v_prev, dim=-1, eps=1e-12).clamp(-1, 1)
                self.curv_sum += torch.arccos(cos)
                self.curv_count += 1
            self.v_prev = v
        self.h_prev = h
        self.layer += 1

    def finish(self, mass: torch.Tensor) -> dict[str, torch.Tensor]:
        n_steps = max(len(self.kin_layers), 1)
        scale2 = (
            ((self.h_prev - self.h0) ** 2).sum(-1).clamp_min(1e-24)
            if self.w.normalize
            else torch.ones_like(self.kin_sum)
        )
        kinetic = mass * self.kin_sum / n_steps / scale2
        curvature = self.curv_sum / max(self.curv_count, 1)
        potential = self.pot_sum / max(self.pot_count, 1)
        per_layer = torch.stack(
            [
                self.w.alpha * mass * k / scale2 + (self.w.beta * p if p is not None else 0.0)
                for k, p in zip(self.kin_layers, self.pot_layers[1:])
            ]
        )  # (layers, tokens)
        return {"kinetic": kinetic, "curvature": curvature, "potential": potential, "per_layer": per_layer}


def _coe_scores(means: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """CoE-R and CoE-C (Chain-of-Embedding) from per-layer mean output states: (layers, batch, d)."""
    hs = torch.stack(means)  # (L+1, B, d)
    diff = hs[1:] - hs[:-1]
    total = (hs[-1] - hs[0]).norm(dim=-1).clamp_min(1e-12)
    mag = diff.norm(dim=-1) / total
    cos_step = nn.functional.cosine_similarity(hs[1:], hs[:-1], dim=-1).clamp(-1, 1)
    cos_total = nn.functional.cosine_similarity(hs[-1], hs[0], dim=-1).clamp(-1, 1)
    ang = torch.arccos(cos_step) / torch.arccos(cos_total).clamp_min(1e-12)
    coe_r = mag.mean(0) - ang.mean(0)
    coe_c = torch.stack([(mag * torch.cos(ang)).mean(0), (mag * torch.sin(ang)).mean(0)], -1).norm(dim=-1)
    return coe_r, coe_c


@torch.no_grad()
def score_batch(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    prompt_lens: Sequence[int],
    start_ids: Sequence[int],
    end_ids: Sequence[int],
    weights: EnergyWeights,
    lens_layers: Optional[Sequence[int]] = None,
    include_answer: bool = False,
    pad_id: int = 0,
) -> list[TraceScores]:
    """Score a batch of full token sequences (prompt + output), left-padded internally."""
    parts = locate_parts(model)
    device = parts.lm_head.weight.device
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    spans, rows, cols, nxt, owners, coe_index = [], [], [], [], [], []
    for b, (seq, plen) in enumerate(zip(sequences, prompt_lens)):
        off = width - len(seq)
        ids[b, off:] = torch.as_tensor(seq)
        mask[b, off:] = 1
        first, last, status = reasoning_span(seq, plen, start_ids, end_ids, include_answer)
        # position t predicts t+1: the last output token has no next token to score
        positions = [t for t in range(first, min(last, len(seq) - 1))]
        spans.append((first, last, status, len(positions)))
        rows += [b] * len(positions)
        cols += [off + t for t in positions]
        nxt += [seq[t + 1] for t in positions]
        owners += [b] * len(positions)
        coe_index.append(torch.arange(off + plen, width) if plen < len(seq) else torch.tensor([width - 1]))
    if not rows:
        raise KineticsError("no reasoning token to score: the outputs are empty or end right after the prompt.")
    acc = _Accumulator(
        torch.tensor(rows),
        torch.tensor(cols),
        torch.tensor(nxt, device=device),
        parts,
        weights,
        None if lens_layers is None else set(lens_layers),
    )

    def hook(_module, _inp, out):
        acc.observe((out[0] if isinstance(out, tuple) else out).detach(), coe_index)

    handles = [parts.embeddings.register_forward_hook(hook)] + [l.register_forward_hook(hook) for l in parts.layers]
    try:
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
    finally:
        for hnd in handles:
            hnd.remove()
    logits = out.logits  # log-softmax is taken per sample on the needed rows only: V×T copies are large
    owner = torch.tensor(owners)
    if weights.mass == "surprisal":
        lp_rows = torch.log_softmax(logits[acc.rows, acc.cols].float(), -1)
        mass = -lp_rows.gather(1, acc.next_ids[:, None].to(lp_rows.device))[:, 0].double().cpu()
        del lp_rows
    else:
        mass = torch.ones(len(acc.rows), dtype=torch.float64)
    terms = acc.finish(mass)
    energy_tok = reconstructed_energy(terms["kinetic"], terms["curvature"], terms["potential"], weights)
    coe_r, coe_c = _coe_scores(acc.coe_means)
    results = []
    for b, (_first, _last, status, n) in enumerate(spans):
        sel = owner == b
        off = width - len(sequences[b])
        out_pos = torch.arange(off + prompt_lens[b], width - 1)
        out_next = ids[b, out_pos + 1]
        nll, ent, maxprob = [], [], []
        for s in range(0, len(out_pos), 256):  # chunks bound the V-wide temporaries
            lp = torch.log_softmax(logits[b, out_pos[s : s + 256]].float(), -1)
            nll.append(-lp.gather(1, out_next[s : s + 256, None].to(lp.device))[:, 0].double())
            ent.append(-(lp.exp() * lp).sum(-1).double())
            maxprob.append(lp.max(-1).values.exp().double())
        nll, ent, maxprob = (torch.cat(x) if x else torch.zeros(0, dtype=torch.float64) for x in (nll, ent, maxprob))
        results.append(
            TraceScores(
                energy=float(energy_tok[sel].mean()),
                kinetic=float(terms["kinetic"][sel].mean()),
                curvature=float(terms["curvature"][sel].mean()),
                potential=float(terms["potential"][sel].mean()),
                per_layer=terms["per_layer"][:, sel].mean(1).tolist(),
                segment_status=status,
                n_reasoning_tokens=n,
                baselines={
                    "maxprob": float(maxprob.mean()) if len(out_pos) else float("nan"),
                    "perplexity": float(nll.mean().exp()) if len(out_pos) else float("nan"),
                    "entropy": float(ent.mean()) if len(out_pos) else float("nan"),
                    "coe_r": float(coe_r[b]),
                    "coe_c": float(coe_c[b]),
                },
            )
        )
    return results


# ------------------------------------------------------------------------------------------- detection
def detection_metrics(confidence: Sequence[float], correct: Sequence[int]) -> dict[str, float]:
    """AUROC, AUPR (correct = positive) and FPR at 95 % TPR of a confidence score (higher = more likely correct)."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    y = np.asarray(correct).astype(int)
    s = np.asarray(confidence, dtype=np.float64)
    if len(set(y.tolist())) < 2:
        raise KineticsError("references must contain both correct (1) and incorrect (0) samples for detection metrics.")
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr": float(average_precision_score(y, s)),
        "fpr_at_95": float(fpr[np.searchsorted(tpr, 0.95)]),
    }


#: Baselines and the sign that turns each into "higher = more likely correct".
BASELINE_DIRECTION: dict[str, float] = {"maxprob": 1.0, "perplexity": -1.0, "entropy": -1.0, "coe_r": 1.0, "coe_c": 1.0}
