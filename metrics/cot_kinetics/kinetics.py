"""CoT-Kinetics: the math of the energy of a reasoning trace, its baselines and its detection scores (plain torch).

RECONSTRUCTION. The paper's method section (arXiv 2505.13408, §2.2) could not be read. Later work
describes the method as the *semantic momentum and curvature energy of hidden states across layers*, and
a public re-implementation runs it with one weight ``gamma = 0.8`` and token aggregation ``average``. The
terms below are this project's reading of that; each is a pluggable :class:`EnergyTerm`. Layer index =
time; each scored token's pre-norm hidden state h_tˡ (l = 0 … L: the input of the first decoder layer,
then every decoder layer's output) is a particle with velocity v_tˡ = h_tˡ⁺¹ − h_tˡ:

* ``momentum``   M_t = mean_l m_t·‖v_tˡ‖ / S_t, S_t = ‖h_tᴸ − h_t⁰‖ (scale-free; m_t = 1 or surprisal);
* ``curvature``  C_t = mean_l arccos cos(v_tˡ, v_tˡ⁺¹), the turn between successive layer deltas;
* ``potential``  U_t = mean over lens layers of −log softmax(W_U·norm(h_tˡ))[y_{t+1}] / log|V| (logit
                 lens; OFF by default: it costs one LM-head product per token per lens layer);
* ``kinetic``    K_t = mean_l ½·m_t·‖v_tˡ‖² / S_t² (an alternative to ``momentum``, weight 0 by default);
* energy         E_t = γ·M_t + (1 − γ)·C_t + β·U_t, γ = 0.8, β = 0; the sample's energy aggregates E_t
                 over the reasoning tokens (``average`` by default). Lower energy = sounder reasoning.

The final norm never enters the dynamics (HF's last ``hidden_states`` entry is normed, the others are
not). The model plumbing lives in ``forward.py``: forward hooks hand each layer's states to the terms
below layer by layer, so only the previous state and velocity of the scored positions are kept (O(T·d)),
never all layers at once. The settings are one :class:`~.config.CotKineticsConfig`.

Names in the comments follow the spec (``specs/cot_kinetics.md`` §b): Segments, Kinetic term (here
momentum M_t and kinetic K_t), Curvature term C_t, Potential term U_t, Energy per token E_t, Sample energy
E, Confidence; CoE-R / CoE-C from Chain-of-Embedding (§c).

The CoE-R / CoE-C baselines (Chain-of-Embedding) use the states exactly as ``hidden_states`` returns them,
the last one after the final norm, averaged over the output tokens ("paper") or over the token set the
CoE authors' released code uses ("authors_code": the first prompt token plus every generated token but
the last).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from hf_trust.errors import KineticsError


# ------------------------------------------------------------------------------------------- Segments
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


# ------------------------------------------------------------------------------------------- energy terms
@dataclass
class LayerStep:
    """What a term sees at one layer: the scored tokens' pre-norm states and the velocities around them."""

    layer: int  # 0 … L
    h: torch.Tensor  # (tokens, d) float64
    v: Optional[torch.Tensor]  # h^l − h^{l−1}, None at l = 0
    v_prev: Optional[torch.Tensor]  # h^{l−1} − h^{l−2}, None at l ≤ 1


@dataclass
class TermContext:
    """Per-batch facts a term may need when it finishes: displacement scale, mass, lens helper."""

    h0: torch.Tensor
    h_last: torch.Tensor
    mass: torch.Tensor
    normalize: bool


class EnergyTerm:
    """One additive part of the energy. Subclasses collect a per-layer profile ``(steps, tokens)``.

    ``observe`` is called once per layer with a :class:`LayerStep`; ``finish`` returns the profile, whose
    mean over its steps is the term's per-token value. Register new terms with :func:`register_energy_term`.
    """

    name: str = ""
    needs_lens: bool = False

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        raise NotImplementedError

    def finish(self, ctx: TermContext) -> torch.Tensor:
        raise NotImplementedError

    def _stack(self, n_tokens: int) -> torch.Tensor:
        return torch.stack(self.steps) if self.steps else torch.zeros(1, n_tokens, dtype=torch.float64)


def _scale(ctx: TermContext) -> torch.Tensor:
    # S_t = ‖h^L − h^0‖: dividing by the net displacement makes the term invariant to the states' scale.
    if not ctx.normalize:
        return torch.ones(len(ctx.h0), dtype=torch.float64)
    return (ctx.h_last - ctx.h0).norm(dim=-1).clamp_min(1e-12)


class MomentumTerm(EnergyTerm):
    """Kinetic term, momentum form: M_t = mean_l m_t·‖v_t^l‖ / S_t (semantic momentum), one value per layer step."""

    name = "momentum"

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if step.v is not None:
            self.steps.append(step.v.norm(dim=-1))

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return ctx.mass * self._stack(len(ctx.h0)) / _scale(ctx)


class KineticTerm(EnergyTerm):
    """Kinetic term, energy form: K_t = mean_l ½·m_t·‖v_t^l‖² / S_t², per layer step (not in the default energy)."""

    name = "kinetic"

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if step.v is not None:
            self.steps.append((step.v * step.v).sum(-1))

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return 0.5 * ctx.mass * self._stack(len(ctx.h0)) / _scale(ctx) ** 2


class CurvatureTerm(EnergyTerm):
    """Curvature term: C_t = mean_l arccos cos(v_t^l, v_t^{l+1}), per pair of successive layer steps (radians, [0, π])."""

    name = "curvature"

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if step.v is not None and step.v_prev is not None:
            cos = nn.functional.cosine_similarity(step.v, step.v_prev, dim=-1, eps=1e-12).clamp(-1, 1)
            self.steps.append(torch.arccos(cos))

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return self._stack(len(ctx.h0))


class PotentialTerm(EnergyTerm):
    """Potential term: U_t = mean over lens layers of the logit-lens surprisal of y_{t+1} / log|V| (see :func:`lens_surprisal`)."""

    name = "potential"
    needs_lens = True

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if lens is not None:
            self.steps.append(lens)

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return self._stack(len(ctx.h0))


def lens_surprisal(
    h: torch.Tensor, next_ids: torch.Tensor, final_norm: Optional[nn.Module], lm_head: nn.Module, chunk: int = 256
) -> torch.Tensor:
    """−log softmax(W_U·norm(h_t^l))[y_{t+1}] / log|V| of pre-norm states ``h`` (tokens, d), in chunks of rows.

    ``norm`` is the model's final norm: the states handed to the terms are pre-norm at every layer, the last
    one included, so it is applied everywhere (HF's normed ``hidden_states[L]`` is never read here).
    """
    dtype = lm_head.weight.dtype
    out = torch.empty(len(h), dtype=torch.float64)
    for s in range(0, len(h), chunk):
        x = h[s : s + chunk].to(dtype)
        if final_norm is not None:
            x = final_norm(x)
        logits = lm_head(x).float()
        nxt = next_ids[s : s + chunk, None].to(logits.device)
        out[s : s + chunk] = -torch.log_softmax(logits, -1).gather(1, nxt)[:, 0].double().cpu()
    return out / math.log(lm_head.weight.shape[0])


ENERGY_TERMS: dict[str, type[EnergyTerm]] = {}


def register_energy_term(cls: type[EnergyTerm]) -> type[EnergyTerm]:
    """Make ``cls`` available by its ``name`` in ``CotKineticsConfig.term_weights`` (usable as a class decorator)."""
    if not cls.name:
        raise KineticsError(f"{cls.__name__}.name is empty; give the energy term a name.")
    ENERGY_TERMS[cls.name] = cls
    return cls


for _cls in (MomentumTerm, CurvatureTerm, PotentialTerm, KineticTerm):
    register_energy_term(_cls)

# ------------------------------------------------------------------------------------------- energy
#: The particle's mass m_t: 1, or the token's surprisal −log p(y_{t+1}).
MASSES = ("unit", "surprisal")
#: How the sample energy E is read from the per-token energies E_t over the reasoning tokens R.
AGGREGATIONS = ("average", "median", "max", "last")


def surprisal_mass(logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
    """Mass m_t = −log softmax(logits_t)[y_{t+1}] (float64, on the CPU) of the rows of ``logits`` (tokens, V)."""
    lp = torch.log_softmax(logits.float(), -1)
    return -lp.gather(1, next_ids[:, None].to(lp.device))[:, 0].double().cpu()


def aggregate_tokens(values: torch.Tensor, how: str) -> float:
    """Sample energy E = aggregate of E_t over t ∈ R: ``average`` (default), ``median``, ``max`` or ``last``."""
    if how == "average":
        return float(values.mean())
    if how == "median":
        return float(values.median())
    if how == "max":
        return float(values.max())
    if how == "last":
        return float(values[-1])
    raise KineticsError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}.")


def combine_terms(values: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Energy per token E_t = Σ_k w_k·term_k,t, by default γ·M_t + (1 − γ)·C_t + β·U_t (weight 0 adds nothing)."""
    first = next(iter(values.values()))
    energy = torch.zeros_like(first)
    for k, v in values.items():
        if weights.get(k, 0.0) != 0.0:
            energy = energy + weights[k] * v
    return energy


def resolve_lens_layers(lens_layers: Optional[Sequence[int]], beta: float, n_layers: int) -> Optional[list[int]]:
    """The layers l of the potential term U_t as indices 0 … L, or None when the logit lens is off.

    Off unless ``beta != 0`` or ``lens_layers`` is given. Negative indices count from the end as in
    Python (``-1`` = the last layer L); anything outside ``[-(L+1), L]`` is an error, never silently dropped.
    (The types are checked by ``CotKineticsConfig``; the range needs the model.)
    """
    if lens_layers is None:
        return list(range(n_layers + 1)) if beta != 0.0 else None
    if len(lens_layers) == 0:
        return None
    for ix in lens_layers:
        if not -(n_layers + 1) <= ix <= n_layers:
            raise KineticsError(
                f"CotKineticsConfig.lens_layers contains {ix}, but the model has states 0 … {n_layers} (embeddings, "
                f"then {n_layers} layers); use indices in [{-(n_layers + 1)}, {n_layers}] (negative counts from the end)."
            )
    return sorted({ix % (n_layers + 1) for ix in lens_layers})


# ------------------------------------------------------------------------------------------- CoE baselines
def coe_scores(layer_means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CoE-R and CoE-C (Chain-of-Embedding) from per-layer mean output states of shape (L+1, batch, d).

    M_l = ‖h̄^{l+1} − h̄^l‖ / ‖h̄^L − h̄^0‖, A_l = arccos cos(h̄^{l+1}, h̄^l) / arccos cos(h̄^L, h̄^0);
    CoE-R = mean M − mean A, CoE-C = ‖(mean M·cos A, mean M·sin A)‖.
    """
    hs = layer_means
    diff = hs[1:] - hs[:-1]
    total = (hs[-1] - hs[0]).norm(dim=-1).clamp_min(1e-12)
    mag = diff.norm(dim=-1) / total
    cos_step = nn.functional.cosine_similarity(hs[1:], hs[:-1], dim=-1).clamp(-1, 1)
    cos_total = nn.functional.cosine_similarity(hs[-1], hs[0], dim=-1).clamp(-1, 1)
    ang = torch.arccos(cos_step) / torch.arccos(cos_total).clamp_min(1e-12)
    coe_r = mag.mean(0) - ang.mean(0)
    coe_c = torch.stack([(mag * torch.cos(ang)).mean(0), (mag * torch.sin(ang)).mean(0)], -1).norm(dim=-1)
    return coe_r, coe_c


COE_TOKEN_SETS = ("paper", "authors_code")


def coe_positions(prompt_len: int, seq_len: int, token_set: str) -> list[int]:
    """Positions (in the unpadded sequence) whose states the CoE baselines average.

    ``paper``: every output token. ``authors_code``: what the CoE authors' released code averages when it
    reads ``generate``'s hidden states: the first prompt token (step 0 holds the prompt, and it takes
    position 0) and every generated token but the last (the last one is never fed back).
    """
    if token_set == "paper":
        return list(range(prompt_len, seq_len)) or [seq_len - 1]
    if token_set == "authors_code":
        return [0] + list(range(prompt_len, seq_len - 1))
    raise KineticsError(f"coe_token_set must be one of {COE_TOKEN_SETS}, got {token_set!r}.")


# ------------------------------------------------------------------------------------------- baselines
def token_baselines(logits: torch.Tensor, next_ids: torch.Tensor, chunk: int = 256) -> dict[str, float]:
    """MaxProb, perplexity and mean entropy of the predictions ``logits`` (tokens, V) of ``next_ids``.

    Row t of ``logits`` predicts ``next_ids[t]`` (every output token, predicted at the position before it).
    One exp pass per chunk gives all three: lse = m + log z, p = e / z, H = lse − Σ p·x, max p = 1 / z;
    chunks bound the V-wide temporaries.
    """
    nan = float("nan")
    if len(next_ids) == 0:
        return {"maxprob": nan, "perplexity": nan, "entropy": nan}
    nll, ent, maxprob = [], [], []
    for s in range(0, len(next_ids), chunk):
        x = logits[s : s + chunk].float()
        m = x.max(-1).values
        e = x.sub(m[:, None]).exp_()
        z = e.sum(-1)
        lse = m + torch.log(z)
        picked = x.gather(1, next_ids[s : s + chunk, None].to(x.device))[:, 0]
        nll.append((lse - picked).double().cpu())
        ent.append((lse - torch.linalg.vecdot(e, x) / z).double().cpu())
        maxprob.append((1.0 / z).double().cpu())
    return {
        "maxprob": float(torch.cat(maxprob).mean()),
        "perplexity": float(torch.cat(nll).mean().exp()),
        "entropy": float(torch.cat(ent).mean()),
    }


# ------------------------------------------------------------------------------------------- confidence
def confidence(energy: Sequence[float], reference: Optional[Sequence[float]] = None) -> list[float]:
    """Confidence conf = σ((median_ref(E) − E) / τ), τ = IQR_ref(E); the reference is the batch or a calibration set."""
    import numpy as np

    e = np.asarray(energy, dtype=np.float64)
    ref = np.asarray(e if reference is None else reference, dtype=np.float64)
    q1, med, q3 = np.percentile(ref, [25, 50, 75])
    tau = max(q3 - q1, 1e-12)
    return (1.0 / (1.0 + np.exp(-(med - e) / tau))).tolist()


@dataclass
class TraceScores:
    """Per-sample outputs of one scored trace."""

    energy: float
    terms: dict[str, float]
    profiles: dict[str, list[float]]
    segment_status: str
    n_reasoning_tokens: int
    baselines: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- detection
def check_references(references: Sequence) -> None:
    """Detection labels must be 1 (answer correct) or 0 (wrong); anything else has no meaning here."""
    import numpy as np

    values = np.asarray(references, dtype=object).ravel()
    bad = sorted(
        {repr(v) for v in values.tolist() if not (isinstance(v, (bool, int, np.integer)) and int(v) in (0, 1))}
    )
    if bad:
        raise KineticsError(
            f"references must be 1 (answer correct) or 0 (answer wrong) for each prediction; got {bad[:5]} in "
            f"references={list(values.tolist())[:10]}{'...' if len(values) > 10 else ''}. Map your labels to 0/1."
        )


def detection_metrics(confidence: Sequence[float], correct: Sequence[int]) -> dict[str, float]:
    """AUROC, AUPR (correct = positive) and FPR at 95 % TPR of a confidence score (higher = more likely correct)."""
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    check_references(correct)
    y = np.asarray(correct).astype(int)
    s = np.asarray(confidence, dtype=np.float64)
    if len(set(y.tolist())) < 2:
        raise KineticsError("references must contain both correct (1) and incorrect (0) samples for detection metrics.")
    if not np.isfinite(s).all():
        raise KineticsError("a score is NaN or infinite; check the inputs (e.g. empty outputs) before detection.")
    fpr, tpr, _ = roc_curve(y, s)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr": float(average_precision_score(y, s)),
        "fpr_at_95": float(fpr[np.searchsorted(tpr, 0.95)]),
    }


#: Baselines and the sign that turns each into "higher = more likely correct" (CoE: larger = correct).
BASELINE_DIRECTION: dict[str, float] = {"maxprob": 1.0, "perplexity": -1.0, "entropy": -1.0, "coe_r": 1.0, "coe_c": 1.0}
#: Energy and every energy term: lower = sounder reasoning, so the confidence is the negated value.
ENERGY_DIRECTION: float = -1.0
