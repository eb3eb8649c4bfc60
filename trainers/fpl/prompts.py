"""LPT and VPT prompts attached to a frozen ``transformers.CLIPModel`` through hooks.

transformers 5.x ``CLIPTextModel`` takes no ``inputs_embeds``, so the learnable text context is written
into the token-embedding output (rows 1..n_ctx) by a forward hook; positional embeddings and EOS pooling
stay the model's own.  Vision prompts are appended by a forward hook on the vision embeddings, i.e. after
the positional embedding and before ``pre_layrnorm``, without positional embedding, as in the study's
prompt-aware ViT.  Deep prompts replace their positions at the input of later encoder layers.
Removing the hooks (:meth:`CLIPPromptModel.remove_prompts`) leaves the base model untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from .config import FPLConfigError, PromptConfig


def _class_rows(
    tokenizer: Any, class_names: Sequence[str], prompt: PromptConfig, max_length: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``[SOS] ctx... <name> . [EOS]`` ids per class, right-padded; returns ids, mask, ctx length."""
    if not class_names:
        raise FPLConfigError("class_names is empty; pass one name per class, in label order.")

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise FPLConfigError("the tokenizer has no bos/eos token id; CLIP prompts need both.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if prompt.uses_text:
        n = prompt.n_ctx_text
        if prompt.init_phrase:
            ctx = ids(prompt.init_phrase)
            if len(ctx) != n:
                raise FPLConfigError(
                    f"init_phrase {prompt.init_phrase!r} has {len(ctx)} tokens but n_ctx_text={n}; set "
                    f"n_ctx_text={len(ctx)} or drop init_phrase for random init."
                )
        else:
            ph = ids(prompt.placeholder)
            if len(ph) != 1:
                raise FPLConfigError(f"placeholder {prompt.placeholder!r} must be a single token, got {len(ph)}.")
            ctx = ph * n
        rows = [[bos] + ctx + ids(f"{name}.") + [eos] for name in class_names]
    else:
        n = 0
        rows = [[bos] + ids(prompt.vision_template.format(name)) + [eos] for name in class_names]
    longest = max(len(r) for r in rows)
    if longest > max_length:
        raise FPLConfigError(
            f"class prompts need {longest} positions but the text tower has {max_length}; shorten the class "
            f"names or lower n_ctx_text."
        )
    input_ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return input_ids, mask, n


class CLIPPromptModel(nn.Module):
    """A frozen CLIP plus learnable prompts; ``forward(pixel_values) -> (batch, classes)`` logits.

    Args:
        clip: a ``transformers.CLIPModel``; all its parameters are frozen here.
        class_names: one name per label, in label order.
        prompt: :class:`PromptConfig`.
        tokenizer: a CLIP tokenizer (anything with ``__call__(text, add_special_tokens=False)`` and bos/eos
            ids).  Alternatively give ``class_input_ids`` (and ``class_attention_mask``) directly.
        class_input_ids: pre-tokenised prompts (as saved by :func:`save_prompts`).

    The trainable tensors live in ``self.prompts`` (names ``text_0..`` and ``vision_0..``); only they have
    ``requires_grad``, so only they travel in the federation.
    """

    def __init__(
        self,
        clip: nn.Module,
        class_names: Optional[Sequence[str]],
        prompt: PromptConfig,
        tokenizer: Any = None,
        class_input_ids: Optional[torch.Tensor] = None,
        class_attention_mask: Optional[torch.Tensor] = None,
    ):
        super().__init__()
        if not hasattr(clip, "text_model") or not hasattr(clip, "vision_model"):
            raise FPLConfigError(f"expected a transformers CLIPModel, got {type(clip).__name__}.")
        if not isinstance(prompt, PromptConfig):
            raise FPLConfigError("prompt must be a PromptConfig(kind=..., n_ctx_text=..., ...).")
        self.clip = clip
        self.prompt_config = prompt
        self.class_names = list(class_names) if class_names is not None else None
        for p in clip.parameters():
            p.requires_grad_(False)
        tcfg, vcfg = clip.config.text_config, clip.config.vision_config
        if prompt.uses_text and prompt.depth_text > tcfg.num_hidden_layers:
            raise FPLConfigError(
                f"depth_text={prompt.depth_text} exceeds the text tower's {tcfg.num_hidden_layers} layers."
            )
        if prompt.uses_vision and prompt.depth_vision > vcfg.num_hidden_layers:
            raise FPLConfigError(
                f"depth_vision={prompt.depth_vision} exceeds the vision tower's {vcfg.num_hidden_layers} layers."
            )
        if class_input_ids is None:
            if tokenizer is None:
                raise FPLConfigError("give a tokenizer (CLIPTokenizer) or class_input_ids to build the class prompts.")
            class_input_ids, class_attention_mask, n_ctx = _class_rows(
                tokenizer, self.class_names or [], prompt, tcfg.max_position_embeddings
            )
        else:
            n_ctx = prompt.n_ctx_text if prompt.uses_text else 0
            if class_attention_mask is None:
                class_attention_mask = torch.ones_like(class_input_ids)
            if class_input_ids.shape[1] < n_ctx + 2:
                raise FPLConfigError("class_input_ids are shorter than [SOS] + context + [EOS].")
        dev = next(clip.parameters()).device
        self.register_buffer("class_input_ids", class_input_ids.long().to(dev), persistent=False)
        self.register_buffer("class_attention_mask", class_attention_mask.long().to(dev), persistent=False)
        self.num_classes = int(class_input_ids.shape[0])

        gen = torch.Generator().manual_seed(prompt.seed)
        self.prompts = nn.ParameterDict()
        ref = next(clip.parameters())
        if prompt.uses_text:
            emb = clip.text_model.embeddings.token_embedding
            for i in range(prompt.depth_text):
                if i == 0 and prompt.init_phrase:
                    # the phrase's own embeddings: at round 0 the prompt is the zero-shot prompt exactly
                    init = emb.weight.detach()[self.class_input_ids[0, 1 : 1 + n_ctx]].clone().float()
                else:
                    init = torch.randn(prompt.n_ctx_text, tcfg.hidden_size, generator=gen) * prompt.init_std
                self.prompts[f"text_{i}"] = nn.Parameter(init.to(ref.device))
        if prompt.uses_vision:
            for i in range(prompt.depth_vision):
                init = torch.randn(prompt.n_ctx_vision, vcfg.hidden_size, generator=gen) * prompt.init_std
                self.prompts[f"vision_{i}"] = nn.Parameter(init.to(ref.device))
        self._handles: list[Any] = []
        self._text_cache: Optional[torch.Tensor] = None
        self.attach_prompts()

    # ------------------------------------------------------------------ hooks
    def attach_prompts(self) -> None:
        """(Re)install the prompt hooks; idempotent."""
        if self._handles:
            return
        cfg = self.prompt_config
        if cfg.uses_text:
            nt = cfg.n_ctx_text
            tm = self.clip.text_model

            def text_embed_hook(_mod, _inp, out):
                ctx = self.prompts["text_0"].to(out.dtype)
                return torch.cat([out[:, :1], ctx.unsqueeze(0).expand(out.shape[0], -1, -1), out[:, 1 + nt :]], dim=1)

            self._handles.append(tm.embeddings.token_embedding.register_forward_hook(text_embed_hook))
            for i in range(1, cfg.depth_text):
                self._handles.append(
                    tm.encoder.layers[i].register_forward_pre_hook(
                        self._replace_hook(f"text_{i}", slice(1, 1 + nt)), with_kwargs=True
                    )
                )
        if cfg.uses_vision:
            nv = cfg.n_ctx_vision
            vm = self.clip.vision_model

            def vision_embed_hook(_mod, _inp, out):
                ctx = self.prompts["vision_0"].to(out.dtype)
                return torch.cat([out, ctx.unsqueeze(0).expand(out.shape[0], -1, -1)], dim=1)

            self._handles.append(vm.embeddings.register_forward_hook(vision_embed_hook))
            for i in range(1, cfg.depth_vision):
                self._handles.append(
                    vm.encoder.layers[i].register_forward_pre_hook(
                        self._replace_hook(f"vision_{i}", slice(-nv, None)), with_kwargs=True
                    )
                )

    def _replace_hook(self, key: str, where: slice):
        def hook(_mod, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            ctx = self.prompts[key].to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
            start, stop, _ = where.indices(hidden.shape[1])
            new = torch.cat([hidden[:, :start], ctx, hidden[:, stop:]], dim=1)
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return hook

    def remove_prompts(self) -> nn.Module:
        """Remove every hook and return the untouched base ``CLIPModel``."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._text_cache = None
        return self.clip

    # ------------------------------------------------------------------ features
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp()

    def text_features(self) -> torch.Tensor:
        """L2-normalised class embeddings ``(classes, projection_dim)`` under the current prompts."""
        out = self.clip.text_model(input_ids=self.class_input_ids, attention_mask=self.class_attention_mask)
        feats = self.clip.text_projection(out.pooler_output)
        return feats / feats.norm(dim=-1, keepdim=True)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.clip.vision_model.parameters()).dtype
        out = self.clip.vision_model(pixel_values=pixel_values.to(dtype))
        feats = self.clip.visual_projection(out.pooler_output)
        return feats / feats.norm(dim=-1, keepdim=True)

    def cached_text_features(self) -> torch.Tensor:
        """Text features without grad, computed once until :meth:`clear_cache` (evaluation)."""
        if self._text_cache is None:
            with torch.no_grad():
                self._text_cache = self.text_features()
        return self._text_cache

    def clear_cache(self) -> None:
        self._text_cache = None

    def forward(self, pixel_values: torch.Tensor, text_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        if text_features is None:
            # without LPT the text side is constant: compute it once
            text_features = self.text_features() if self.prompt_config.uses_text else self.cached_text_features()
        img = self.image_features(pixel_values)
        return (self.logit_scale * img @ text_features.t().to(img.dtype)).float()

    def payload_numel(self) -> int:
        """Numbers sent per client and round: n_ctx x width x depth summed over the prompt kinds."""
        return sum(p.numel() for p in self.prompts.values())
