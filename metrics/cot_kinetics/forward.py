"""CoT-Kinetics plumbing: find the parts of a transformers causal LM, run one forward pass with hooks that
stream every layer's states into the energy terms, and turn the result into per-sample scores.

The math (terms, energy, CoE, token baselines) is in ``kinetics.py``; this module only moves tensors:
left padding, the scored positions, forward hooks, and the slices of the logits each score reads.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from hf_trust.errors import KineticsError

from .config import CotKineticsConfig
from .kinetics import (
    ENERGY_TERMS,
    EnergyTerm,
    LayerStep,
    TermContext,
    TraceScores,
    aggregate_tokens,
    coe_positions,
    coe_scores,
    combine_terms,
    lens_surprisal,
    reasoning_span,
    resolve_lens_layers,
    surprisal_mass,
    token_baselines,
)


# ------------------------------------------------------------------------------------------- model parts
@dataclass
class ModelParts:
    embeddings: nn.Module
    layers: Sequence[nn.Module]
    final_norm: Optional[nn.Module]
    lm_head: nn.Module


def _decoder_layers(owners: Sequence[Optional[nn.Module]]) -> Optional[nn.ModuleList]:
    for owner in owners:
        for name in ("layers", "h", "blocks"):
            cand = getattr(owner, name, None) if owner is not None else None
            if isinstance(cand, nn.ModuleList) and len(cand) > 0:
                return cand
    return None


def _final_norm(owners: Sequence[Optional[nn.Module]]) -> Optional[nn.Module]:
    for owner in owners:
        for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
            if owner is not None and isinstance(getattr(owner, name, None), nn.Module):
                return getattr(owner, name)
    return None


def locate_parts(model: nn.Module) -> ModelParts:
    """Embeddings, decoder layers, final norm and LM head of a transformers causal LM."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None) or getattr(model, "model", None)
    decoder = getattr(base, "decoder", None)
    layers = _decoder_layers((base, decoder, model))
    norm = _final_norm((base, decoder))
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


# ------------------------------------------------------------------------------------------- batch layout
@dataclass
class BatchLayout:
    """A left-padded batch and where its scored tokens sit.

    ``rows``/``cols``/``next_ids`` list every reasoning token t (one entry each, all samples together) with
    the token y_{t+1} it predicts; ``spans`` holds each sample's segment status and token count;
    ``coe_index`` the padded positions each sample's CoE baselines average; ``keep`` the number of trailing
    columns whose logits any score reads.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    offsets: list[int]
    spans: list[tuple[str, int]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    next_ids: list[int] = field(default_factory=list)
    coe_index: list[torch.Tensor] = field(default_factory=list)
    keep: int = 0

    @property
    def width(self) -> int:
        return self.ids.shape[1]


def layout_batch(
    sequences: Sequence[Sequence[int]],
    prompt_lens: Sequence[int],
    start_ids: Sequence[int],
    end_ids: Sequence[int],
    config: CotKineticsConfig,
    pad_id: int,
    device: torch.device,
) -> BatchLayout:
    """Left-pad ``sequences`` (prompt + output) and locate each sample's reasoning tokens (Segments)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    lay = BatchLayout(ids, mask, [width - len(s) for s in sequences])
    for b, (seq, plen) in enumerate(zip(sequences, prompt_lens)):
        off = lay.offsets[b]
        ids[b, off:] = torch.as_tensor(seq)
        mask[b, off:] = 1
        first, last, status = reasoning_span(seq, plen, start_ids, end_ids, config.include_answer)
        # position t predicts t+1: the last token of the sequence has no next token to score
        positions = list(range(first, min(last, len(seq) - 1)))
        lay.spans.append((status, len(positions)))
        lay.rows += [b] * len(positions)
        lay.cols += [off + t for t in positions]
        lay.next_ids += [seq[t + 1] for t in positions]
        coe = coe_positions(plen, len(seq), config.coe_token_set)
        lay.coe_index.append(torch.tensor([off + t for t in coe]).to(device))
    if not lay.rows:
        raise KineticsError("no reasoning token to score: the outputs are empty or end right after the prompt.")
    # earliest column whose logits are needed: the prediction of each row's first output token
    lay.keep = width - min(off + max(plen, 1) - 1 for off, plen in zip(lay.offsets, prompt_lens))
    return lay


# ------------------------------------------------------------------------------------------- layer stream
class LayerStream:
    """Receives each layer's states during the forward pass and hands the scored tokens' states to the terms.

    Keeps only the first state h^0, the previous state and the previous velocity of the scored positions,
    plus the per-layer mean states the CoE baselines need.
    """

    def __init__(
        self,
        lay: BatchLayout,
        parts: ModelParts,
        terms: Sequence[EnergyTerm],
        lens_layers: Optional[set[int]],
        device: torch.device,
    ):
        self.rows = torch.tensor(lay.rows, device=device)
        self.cols = torch.tensor(lay.cols, device=device)
        self.next_ids = torch.tensor(lay.next_ids, device=device)
        self.coe_index = lay.coe_index
        self.parts, self.terms, self.lens_layers = parts, terms, lens_layers
        self.n_layers = len(parts.layers)
        self.layer = 0
        self.h0 = self.h_prev = self.v_prev = None
        self.coe_means: list[torch.Tensor] = []  # (batch, d) per layer, as ``hidden_states`` gives them

    def observe(self, hidden: torch.Tensor) -> None:
        coe_states = hidden
        if self.layer == self.n_layers and self.parts.final_norm is not None:
            # hidden_states[L] is the final-normed state; the CoE baselines are defined on it.
            coe_states = self.parts.final_norm(hidden)
        self.coe_means.append(
            torch.stack([coe_states[b, ix].double().mean(0).cpu() for b, ix in enumerate(self.coe_index)])
        )
        scored = hidden[self.rows, self.cols]
        h = scored.double().cpu()
        lens = None
        if self.lens_layers is not None and self.layer in self.lens_layers:
            lens = lens_surprisal(scored, self.next_ids, self.parts.final_norm, self.parts.lm_head)
        v = None if self.h_prev is None else h - self.h_prev  # velocity v^{l−1} = h^l − h^{l−1}
        step = LayerStep(self.layer, h, v, self.v_prev)
        for term in self.terms:
            term.observe(step, lens)
        if self.h0 is None:
            self.h0 = h
        self.v_prev = v
        self.h_prev = h
        self.layer += 1


def forward_streaming(model: nn.Module, parts: ModelParts, lay: BatchLayout, stream: LayerStream) -> torch.Tensor:
    """One forward pass with hooks that feed ``stream`` every state h^0 … h^L; returns the kept logits."""
    device = parts.lm_head.weight.device

    def first_hook(_module, args, kwargs):
        # hidden_states[0]: the input of the first decoder layer (embeddings plus whatever the model adds)
        stream.observe((args[0] if args else kwargs["hidden_states"]).detach())

    def hook(_module, _inp, out):
        stream.observe((out[0] if isinstance(out, tuple) else out).detach())

    handles = [parts.layers[0].register_forward_pre_hook(first_hook, with_kwargs=True)]
    handles += [layer.register_forward_hook(hook) for layer in parts.layers]
    try:
        # left padding: positions count from each row's first real token (absolute-position models
        # such as GPT-2 would otherwise see shifted positions)
        position_ids = (lay.mask.cumsum(-1) - 1).clamp_min(0)
        extra = {}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            # rows are left-padded, so every position whose logits are used sits in the last `keep` columns;
            # skipping the LM head on the prompt saves a V×d product per prompt token
            extra["logits_to_keep"] = lay.keep
        # without padding the mask is all ones: leaving it out lets attention take its causal fast path
        attn = None if bool(lay.mask.all()) else lay.mask.to(device)
        out = model(input_ids=lay.ids.to(device), attention_mask=attn, position_ids=position_ids.to(device), **extra)
    finally:
        for hnd in handles:
            hnd.remove()
    if stream.layer != stream.n_layers + 1:
        raise KineticsError(
            f"saw {stream.layer} layer states, expected {stream.n_layers + 1}; the model skipped layers."
        )
    return out.logits


# ------------------------------------------------------------------------------------------- scoring
def plan_terms(config: CotKineticsConfig, n_layers: int) -> tuple[list[EnergyTerm], Optional[list[int]]]:
    """The energy terms to compute and the logit-lens layers (None: lens off)."""
    lens = resolve_lens_layers(config.lens_layers, config.beta, n_layers)
    w = config.weights()
    names = ["momentum", "curvature"] + (["potential"] if lens is not None else [])
    # a term named in term_weights is computed and reported even at weight 0 (to read it alone)
    names += [k for k, v in w.items() if (v != 0.0 or k in config.term_weights) and k not in names]
    if "potential" in names and lens is None:
        raise KineticsError("the potential term needs the logit lens; set CotKineticsConfig.lens_layers or beta != 0.")
    return [ENERGY_TERMS[k]() for k in names], lens


@torch.no_grad()
def score_batch(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    prompt_lens: Sequence[int],
    start_ids: Sequence[int],
    end_ids: Sequence[int],
    config: Optional[CotKineticsConfig] = None,
    pad_id: int = 0,
) -> list[TraceScores]:
    """Score a batch of full token sequences (prompt + output), left-padded internally."""
    config = config or CotKineticsConfig()
    parts = locate_parts(model)
    device = parts.lm_head.weight.device
    terms, lens = plan_terms(config, len(parts.layers))
    check_position_limit(model, [len(s) for s in sequences])
    lay = layout_batch(sequences, prompt_lens, start_ids, end_ids, config, pad_id, device)
    stream = LayerStream(lay, parts, terms, None if lens is None else set(lens), device)
    logits = forward_streaming(model, parts, lay, stream)  # log-softmax only on the rows needed: V×T is large
    shift = lay.width - logits.shape[1]  # logits_to_keep dropped the first `shift` columns
    if config.mass == "surprisal":
        mass = surprisal_mass(logits[stream.rows, stream.cols - shift], stream.next_ids)
    else:
        mass = torch.ones(len(lay.rows), dtype=torch.float64)
    ctx = TermContext(h0=stream.h0, h_last=stream.h_prev, mass=mass, normalize=config.normalize)
    profiles = {t.name: t.finish(ctx) for t in terms}  # (steps, tokens)
    per_token = {k: p.mean(0) for k, p in profiles.items()}
    energy_tok = combine_terms(per_token, config.weights())
    coe_r, coe_c = coe_scores(torch.stack(stream.coe_means))
    owner = torch.tensor(lay.rows)
    results = []
    for b, (status, n) in enumerate(lay.spans):
        sel = owner == b
        # every output token's own prediction: position t−1 predicts token t (t = prompt_len … end)
        first_out = lay.offsets[b] + max(prompt_lens[b], 1) - 1
        # a slice is a view; fancy indexing would copy V floats per row
        out_logits = logits[b, first_out - shift : lay.width - 1 - shift]
        baselines = token_baselines(out_logits, lay.ids[b, first_out + 1 :])
        results.append(
            TraceScores(
                energy=aggregate_tokens(energy_tok[sel], config.aggregation),
                terms={k: aggregate_tokens(v[sel], config.aggregation) for k, v in per_token.items()},
                profiles={k: p[:, sel].mean(1).tolist() for k, p in profiles.items()},
                segment_status=status,
                n_reasoning_tokens=n,
                baselines={**baselines, "coe_r": float(coe_r[b]), "coe_c": float(coe_c[b])},
            )
        )
    return results


__all__ = [
    "BatchLayout",
    "LayerStream",
    "ModelParts",
    "check_position_limit",
    "forward_streaming",
    "layout_batch",
    "locate_parts",
    "plan_terms",
    "position_limit",
    "score_batch",
]
