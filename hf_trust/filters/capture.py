"""Capturing last-prompt-token → image-token attention with forward hooks (HF plumbing for BYE).

Under eager attention every decoder ``self_attn`` module returns ``(attn_output, attn_weights)`` even when
``output_attentions=False``.  A hook slices the one query row BYE needs, so the L × H × T × T tensors are
never kept (about 1 GB per LLaVA-7B sample in fp16).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import torch
from torch import nn

from hf_trust.errors import HFTrustConfigError


def unwrap_model(model: Any) -> nn.Module:
    """The transformers model under a PEFT wrapper (``PeftModel``) if there is one."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def text_config(model: nn.Module) -> Any:
    cfg = model.config
    return getattr(cfg, "text_config", None) or cfg


def image_token_id(model: nn.Module) -> int:
    cfg = model.config
    tid = getattr(cfg, "image_token_id", None)
    if tid is None:
        tid = getattr(cfg, "image_token_index", None)
    if tid is None:
        raise HFTrustConfigError(
            f"{type(model).__name__}.config has no `image_token_id`: BYE needs a LLaVA-style VLM whose prompt "
            "holds image-placeholder tokens. Pass a model such as LlavaForConditionalGeneration, or set "
            "`model.config.image_token_id` to the id your processor expands images into."
        )
    return int(tid)


def check_eager(model: nn.Module) -> None:
    impl = getattr(text_config(model), "_attn_implementation", None)
    if impl != "eager":
        raise HFTrustConfigError(
            f"BYE reads attention weights, but the language model uses attn_implementation={impl!r}, which "
            "returns none. Load with `from_pretrained(..., attn_implementation='eager')` or call "
            "`model.set_attn_implementation('eager')` first (a dict such as {'text_config': 'eager', "
            "'vision_config': 'sdpa', '': 'eager'} keeps the vision tower fast)."
        )


def decoder_attention_modules(model: nn.Module) -> list[nn.Module]:
    """The ``self_attn`` module of every language-model decoder layer, in order 0..L-1."""
    for path in ("model.language_model.layers", "language_model.model.layers", "language_model.layers", "model.layers"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and len(obj) and hasattr(obj[0], "self_attn"):
            return [layer.self_attn for layer in obj]
    raise HFTrustConfigError(
        f"could not find the decoder layers of {type(model).__name__}; BYE expects "
        "`model.model.language_model.layers[i].self_attn` (transformers LLaVA layout)."
    )


class LastTokenAttention:
    """Collects, per decoder layer, the head-mean attention row of each sequence's last prompt token.

    Use as ``with LastTokenAttention(model, query_index) as cap: model(**inputs)``; then ``cap.rows`` is a
    list of L tensors of shape (B, T) in fp32.
    """

    def __init__(self, model: nn.Module, query_index: torch.Tensor, head_reduce: str = "mean"):
        if head_reduce not in ("mean", "none"):
            raise HFTrustConfigError(f"head_reduce must be 'mean' (the reference) or 'none', got {head_reduce!r}.")
        self.modules = decoder_attention_modules(model)
        self.query_index = query_index
        self.head_reduce = head_reduce
        self.rows: list[Optional[torch.Tensor]] = [None] * len(self.modules)
        self._handles: list[Any] = []

    def _hook(self, layer: int):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            weights = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if weights is None:
                raise HFTrustConfigError(
                    "a decoder attention module returned no weights; BYE needs eager attention "
                    "(`model.set_attn_implementation('eager')`)."
                )
            b = torch.arange(weights.shape[0], device=weights.device)
            row = weights[b, :, self.query_index.to(weights.device), :].float()  # (B, H, T)
            self.rows[layer] = row.mean(dim=1) if self.head_reduce == "mean" else row

        return hook

    def __enter__(self) -> LastTokenAttention:
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def last_prompt_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row; works for left padding (−1) and right padding alike."""
    t = attention_mask.shape[1]
    pos = torch.arange(t, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), pos, torch.full_like(pos, -1)).max(dim=1).values


@contextmanager
def capture_rows(
    model: nn.Module, attention_mask: torch.Tensor, head_reduce: str = "mean"
) -> Iterator[LastTokenAttention]:
    cap = LastTokenAttention(model, last_prompt_index(attention_mask), head_reduce)
    with cap:
        yield cap
