"""CoT-Kinetics energy of a reasoning trace, computed while the model runs (plain torch).

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
not). Memory: forward hooks update per-token running quantities layer by layer, so only the previous
state and velocity of the scored positions are kept (O(T·d)), never all layers at once.

The CoE-R / CoE-C baselines (Chain-of-Embedding) use the states exactly as ``hidden_states`` returns them,
the last one after the final norm, averaged over the output tokens ("paper") or over the token set the
CoE authors' released code uses ("authors_code": the first prompt token plus every generated token but
the last).
"""

from __future__ import annotations

import inspect
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


def position_limit(model: nn.Module) -> Optional[int]:
    """The longest sequence the model was built for (``max_position_embeddings``, GPT-2's ``n_positions``)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_position_limit(model: nn.Module, lengths: Sequence[int]) -> None:
    """Refuse sequences longer than the model's position limit, naming the longest one and the limit.

    Past the limit an absolute-position model (GPT-2) fails with a bare ``IndexError`` in its position
    embedding, and a rotary one (Llama) runs on positions it never saw in training: the hidden states, and so
    every energy, are then meaningless although nothing fails.
    """
    limit = position_limit(model)
    if limit is None or not lengths:
        return
    longest = max(range(len(lengths)), key=lambda i: lengths[i])
    if lengths[longest] > limit:
        over = sum(n > limit for n in lengths)
        raise KineticsError(
            f"sample {longest} is {lengths[longest]} tokens (prompt + output) but the model's position limit "
            f"(config max_position_embeddings / n_positions) is {limit}; {over} sample(s) exceed it. Shorten the "
            f"prompts or outputs to at most {limit} tokens, or score with a model built for longer sequences."
        )


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
    """m_t·‖h^{l+1} − h^l‖ / S_t per layer step (semantic momentum)."""

    name = "momentum"

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if step.v is not None:
            self.steps.append(step.v.norm(dim=-1))

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return ctx.mass * self._stack(len(ctx.h0)) / _scale(ctx)


class KineticTerm(EnergyTerm):
    """½·m_t·‖h^{l+1} − h^l‖² / S_t² per layer step (kinetic energy; not in the default energy)."""

    name = "kinetic"

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if step.v is not None:
            self.steps.append((step.v * step.v).sum(-1))

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return 0.5 * ctx.mass * self._stack(len(ctx.h0)) / _scale(ctx) ** 2


class CurvatureTerm(EnergyTerm):
    """arccos cos(v^l, v^{l+1}) per pair of successive layer steps (radians, in [0, π])."""

    name = "curvature"

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if step.v is not None and step.v_prev is not None:
            cos = nn.functional.cosine_similarity(step.v, step.v_prev, dim=-1, eps=1e-12).clamp(-1, 1)
            self.steps.append(torch.arccos(cos))

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return self._stack(len(ctx.h0))


class PotentialTerm(EnergyTerm):
    """Logit-lens surprisal of the emitted next token at each lens layer, divided by log|V|."""

    name = "potential"
    needs_lens = True

    def observe(self, step: LayerStep, lens: Optional[torch.Tensor]) -> None:
        if lens is not None:
            self.steps.append(lens)

    def finish(self, ctx: TermContext) -> torch.Tensor:
        return self._stack(len(ctx.h0))


ENERGY_TERMS: dict[str, type[EnergyTerm]] = {}


def register_energy_term(cls: type[EnergyTerm]) -> type[EnergyTerm]:
    """Make ``cls`` available by its ``name`` in ``term_weights`` (usable as a class decorator)."""
    if not cls.name:
        raise KineticsError(f"{cls.__name__}.name is empty; give the energy term a name.")
    ENERGY_TERMS[cls.name] = cls
    return cls


for _cls in (MomentumTerm, CurvatureTerm, PotentialTerm, KineticTerm):
    register_energy_term(_cls)

AGGREGATIONS = ("average", "median", "max", "last")


def aggregate_tokens(values: torch.Tensor, how: str) -> float:
    """One sample value from per-token values: ``average`` (default), ``median``, ``max`` or ``last``."""
    if how == "average":
        return float(values.mean())
    if how == "median":
        return float(values.median())
    if how == "max":
        return float(values.max())
    if how == "last":
        return float(values[-1])
    raise KineticsError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}.")


def _finite(name: str, value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise KineticsError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(x):
        raise KineticsError(f"{name} must be finite, got {value!r}; pass a real number (see the metric card).")
    return x


@dataclass
class EnergyWeights:
    """How the terms are weighed: E = γ·momentum + (1 − γ)·curvature + β·potential (+ extra terms).

    ``term_weights`` overrides or adds weights by term name (e.g. ``{"kinetic": 1.0, "momentum": 0.0}``).
    """

    gamma: float = 0.8
    beta: float = 0.0
    normalize: bool = True
    mass: str = "unit"  # "unit" or "surprisal"
    aggregation: str = "average"
    term_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gamma = _finite("gamma", self.gamma)
        if not 0.0 <= self.gamma <= 1.0:
            raise KineticsError(
                f"gamma must lie in [0, 1] (momentum weight; curvature gets 1 − gamma), got {self.gamma}."
            )
        self.beta = _finite("beta", self.beta)
        if self.mass not in ("unit", "surprisal"):
            raise KineticsError(f"mass must be 'unit' or 'surprisal', got {self.mass!r}.")
        if self.aggregation not in AGGREGATIONS:
            raise KineticsError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}.")
        for k, v in dict(self.term_weights).items():
            if k not in ENERGY_TERMS:
                raise KineticsError(f"term_weights names an unknown term {k!r}; known terms: {sorted(ENERGY_TERMS)}.")
            self.term_weights[k] = _finite(f"term_weights[{k!r}]", v)

    def weights(self) -> dict[str, float]:
        w = {"momentum": self.gamma, "curvature": 1.0 - self.gamma, "potential": self.beta}
        w.update(self.term_weights)
        return w


def combine_terms(values: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """E_t = Σ_k w_k·term_k,t over the computed terms (a term of weight 0 contributes nothing)."""
    first = next(iter(values.values()))
    energy = torch.zeros_like(first)
    for k, v in values.items():
        if weights.get(k, 0.0) != 0.0:
            energy = energy + weights[k] * v
    return energy


def resolve_lens_layers(lens_layers: Optional[Sequence[int]], beta: float, n_layers: int) -> Optional[list[int]]:
    """The lens layers as indices 0 … L, or None when the logit lens is off.

    Off unless ``beta != 0`` or ``lens_layers`` is given. Negative indices count from the end as in
    Python (``-1`` = the last layer L); anything outside ``[-(L+1), L]`` is an error, never silently dropped.
    """
    if lens_layers is None:
        return list(range(n_layers + 1)) if beta != 0.0 else None
    if isinstance(lens_layers, (int, str)) or not isinstance(lens_layers, Sequence):
        raise KineticsError(f"lens_layers must be a list of layer indices, got {lens_layers!r}.")
    if len(lens_layers) == 0:
        if beta != 0.0:
            raise KineticsError("lens_layers is empty while beta != 0; give at least one layer or set beta=0.")
        return None
    out = []
    for ix in lens_layers:
        if isinstance(ix, bool) or not isinstance(ix, int):
            raise KineticsError(f"lens_layers must hold integers, got {ix!r}.")
        if not -(n_layers + 1) <= ix <= n_layers:
            raise KineticsError(
                f"lens_layers contains {ix}, but the model has states 0 … {n_layers} (embeddings, then "
                f"{n_layers} layers); use indices in [{-(n_layers + 1)}, {n_layers}] (negative counts from the end)."
            )
        out.append(ix % (n_layers + 1))
    return sorted(set(out))


@dataclass
class TraceScores:
    """Per-sample outputs of one scored trace."""

    energy: float
    terms: dict[str, float]
    profiles: dict[str, list[float]]
    segment_status: str
    n_reasoning_tokens: int
    baselines: dict[str, float] = field(default_factory=dict)


class _Accumulator:
    """Streams the layer states of the scored positions through the energy terms and the CoE means."""

    def __init__(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        next_ids: torch.Tensor,
        parts: ModelParts,
        terms: Sequence[EnergyTerm],
        lens_layers: Optional[set[int]],
        coe_index: Sequence[torch.Tensor],
        chunk: int = 256,
    ):
        self.rows, self.cols, self.next_ids = rows, cols, next_ids
        self.parts, self.terms, self.lens_layers, self.chunk = parts, terms, lens_layers, chunk
        self.coe_index = coe_index
        self.n_layers = len(parts.layers)
        self.layer = 0
        self.h0 = self.h_prev = self.v_prev = None
        self.log_v = math.log(parts.lm_head.weight.shape[0])
        self.coe_means: list[torch.Tensor] = []  # (batch, d) per layer, as ``hidden_states`` gives them

    def _lens(self, h: torch.Tensor) -> torch.Tensor:
        dtype = self.parts.lm_head.weight.dtype
        out = torch.empty(len(h), dtype=torch.float64)
        for s in range(0, len(h), self.chunk):
            x = h[s : s + self.chunk].to(dtype)
            if self.parts.final_norm is not None:
                x = self.parts.final_norm(x)
            logits = self.parts.lm_head(x).float()
            nxt = self.next_ids[s : s + self.chunk, None].to(logits.device)
            out[s : s + self.chunk] = -torch.log_softmax(logits, -1).gather(1, nxt)[:, 0].double().cpu()
        return out / self.log_v

    def observe(self, hidden: torch.Tensor) -> None:
        is_last = self.layer == self.n_layers
        coe_states = hidden
        if is_last and self.parts.final_norm is not None:
            # hidden_states[L] is the final-normed state; the CoE baselines are defined on it.
            coe_states = self.parts.final_norm(hidden)
        self.coe_means.append(
            torch.stack([coe_states[b, ix].double().mean(0).cpu() for b, ix in enumerate(self.coe_index)])
        )
        h = hidden[self.rows, self.cols].double().cpu()
        lens = None
        if self.lens_layers is not None and self.layer in self.lens_layers:
            lens = self._lens(hidden[self.rows, self.cols])
        v = None if self.h_prev is None else h - self.h_prev
        step = LayerStep(self.layer, h, v, self.v_prev)
        for term in self.terms:
            term.observe(step, lens)
        if self.h0 is None:
            self.h0 = h
        self.v_prev = v
        self.h_prev = h
        self.layer += 1


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
    coe_token_set: str = "paper",
) -> list[TraceScores]:
    """Score a batch of full token sequences (prompt + output), left-padded internally."""
    parts = locate_parts(model)
    device = parts.lm_head.weight.device
    n_layers = len(parts.layers)
    lens = resolve_lens_layers(lens_layers, weights.beta, n_layers)
    w = weights.weights()
    names = ["momentum", "curvature"] + (["potential"] if lens is not None else [])
    # a term named in term_weights is computed and reported even at weight 0 (to read it alone)
    names += [k for k, v in w.items() if (v != 0.0 or k in weights.term_weights) and k not in names]
    if "potential" in names and lens is None:
        raise KineticsError("the potential term needs the logit lens; pass lens_layers or beta != 0.")
    terms = [ENERGY_TERMS[k]() for k in names]
    check_position_limit(model, [len(s) for s in sequences])
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    spans, rows, cols, nxt, coe_index = [], [], [], [], []
    for b, (seq, plen) in enumerate(zip(sequences, prompt_lens)):
        off = width - len(seq)
        ids[b, off:] = torch.as_tensor(seq)
        mask[b, off:] = 1
        first, last, status = reasoning_span(seq, plen, start_ids, end_ids, include_answer)
        # position t predicts t+1: the last token of the sequence has no next token to score
        positions = list(range(first, min(last, len(seq) - 1)))
        spans.append((status, len(positions)))
        rows += [b] * len(positions)
        cols += [off + t for t in positions]
        nxt += [seq[t + 1] for t in positions]
        coe_index.append(torch.tensor([off + t for t in coe_positions(plen, len(seq), coe_token_set)]).to(device))
    # earliest column whose logits are needed: the prediction of each row's first output token
    keep = width - min(width - len(seq) + max(plen, 1) - 1 for seq, plen in zip(sequences, prompt_lens))
    if not rows:
        raise KineticsError("no reasoning token to score: the outputs are empty or end right after the prompt.")
    owner = torch.tensor(rows)
    acc = _Accumulator(
        torch.tensor(rows, device=device),
        torch.tensor(cols, device=device),
        torch.tensor(nxt, device=device),
        parts,
        terms,
        None if lens is None else set(lens),
        coe_index,
    )

    def first_hook(_module, args, kwargs):
        # hidden_states[0]: the input of the first decoder layer (embeddings plus whatever the model adds)
        acc.observe((args[0] if args else kwargs["hidden_states"]).detach())

    def hook(_module, _inp, out):
        acc.observe((out[0] if isinstance(out, tuple) else out).detach())

    handles = [parts.layers[0].register_forward_pre_hook(first_hook, with_kwargs=True)]
    handles += [layer.register_forward_hook(hook) for layer in parts.layers]
    try:
        # left padding: positions count from each row's first real token (absolute-position models
        # such as GPT-2 would otherwise see shifted positions)
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        extra = {}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            # rows are left-padded, so every position whose logits are used sits in the last `keep` columns;
            # skipping the LM head on the prompt saves a V×d product per prompt token
            extra["logits_to_keep"] = keep
        # without padding the mask is all ones: leaving it out lets attention take its causal fast path
        attn = None if bool(mask.all()) else mask.to(device)
        out = model(input_ids=ids.to(device), attention_mask=attn, position_ids=position_ids.to(device), **extra)
    finally:
        for hnd in handles:
            hnd.remove()
    if acc.layer != n_layers + 1:
        raise KineticsError(f"saw {acc.layer} layer states, expected {n_layers + 1}; the model skipped layers.")
    logits = out.logits  # log-softmax is taken on the needed rows only: V×T copies are large
    shift = width - logits.shape[1]  # logits_to_keep dropped the first `shift` columns
    if weights.mass == "surprisal":
        lp_rows = torch.log_softmax(logits[acc.rows, acc.cols - shift].float(), -1)
        mass = -lp_rows.gather(1, acc.next_ids[:, None].to(lp_rows.device))[:, 0].double().cpu()
        del lp_rows
    else:
        mass = torch.ones(len(rows), dtype=torch.float64)
    ctx = TermContext(h0=acc.h0, h_last=acc.h_prev, mass=mass, normalize=weights.normalize)
    profiles = {t.name: t.finish(ctx) for t in terms}  # (steps, tokens)
    per_token = {k: p.mean(0) for k, p in profiles.items()}
    energy_tok = combine_terms(per_token, w)
    coe_r, coe_c = coe_scores(torch.stack(acc.coe_means))
    results = []
    for b, (status, n) in enumerate(spans):
        sel = owner == b
        off = width - len(sequences[b])
        # every output token's own prediction: position t−1 predicts token t (t = prompt_len … end)
        first_out = off + max(prompt_lens[b], 1) - 1
        out_pos = torch.arange(first_out, width - 1)
        out_next = ids[b, out_pos + 1]
        nll, ent, maxprob = [], [], []
        for s in range(0, len(out_pos), 256):  # chunks bound the V-wide temporaries
            # one exp pass gives all three: lse = m + log z, p = e / z, H = lse − Σ p·x, max p = 1 / z
            lo = first_out + s - shift  # a slice is a view; fancy indexing would copy V floats per row
            x = logits[b, lo : min(lo + 256, width - 1 - shift)].float()
            m = x.max(-1).values
            e = x.sub(m[:, None]).exp_()
            z = e.sum(-1)
            lse = m + torch.log(z)
            picked = x.gather(1, out_next[s : s + 256, None].to(x.device))[:, 0]
            nll.append((lse - picked).double().cpu())
            ent.append((lse - torch.linalg.vecdot(e, x) / z).double().cpu())
            maxprob.append((1.0 / z).double().cpu())
        nll, ent, maxprob = (torch.cat(x) if x else torch.zeros(0, dtype=torch.float64) for x in (nll, ent, maxprob))
        has = len(out_pos) > 0
        results.append(
            TraceScores(
                energy=aggregate_tokens(energy_tok[sel], weights.aggregation),
                terms={k: aggregate_tokens(v[sel], weights.aggregation) for k, v in per_token.items()},
                profiles={k: p[:, sel].mean(1).tolist() for k, p in profiles.items()},
                segment_status=status,
                n_reasoning_tokens=n,
                baselines={
                    "maxprob": float(maxprob.mean()) if has else float("nan"),
                    "perplexity": float(nll.mean().exp()) if has else float("nan"),
                    "entropy": float(ent.mean()) if has else float("nan"),
                    "coe_r": float(coe_r[b]),
                    "coe_c": float(coe_c[b]),
                },
            )
        )
    return results


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
