"""Saving the learnt prompts as a small adapter and loading them onto a stock ``CLIPModel``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hf_trust.atomic import atomic_save, atomic_write_json
from hf_trust.errors import HFTrustCacheError, HFTrustFileNotFoundError
from hf_trust.fingerprint import file_sha256

from .config import FPLConfigError, PromptConfig
from .prompts import CLIPPromptModel

ADAPTER_CONFIG = "fpl_prompt_config.json"
ADAPTER_WEIGHTS = "fpl_prompts.safetensors"


def save_prompts(model: CLIPPromptModel, path: str | Path) -> Path:
    """Write the prompt tensors (safetensors) and what is needed to rebuild the prompted model: the
    prompt config, class names and tokenised class prompts, and the base model's identity.

    Both files are written atomically, weights first; the config, written last, records the SHA-256
    of the weights, so a pair left inconsistent by a crash between the two writes is detected on load.
    """
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.prompts.items()}
    atomic_save(out / ADAPTER_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    cfg = model.clip.config
    meta = {
        "prompt_config": model.prompt_config.to_dict(),
        "class_names": model.class_names,
        "class_input_ids": model.class_input_ids.cpu().tolist(),
        "class_attention_mask": model.class_attention_mask.cpu().tolist(),
        "base_model_name_or_path": getattr(cfg, "_name_or_path", "") or "",
        "text_hidden_size": cfg.text_config.hidden_size,
        "vision_hidden_size": cfg.vision_config.hidden_size,
        "weights_sha256": file_sha256(out / ADAPTER_WEIGHTS),
    }
    atomic_write_json(out / ADAPTER_CONFIG, meta, indent=1)
    return out


def load_prompts(clip_model: Any, path: str | Path) -> CLIPPromptModel:
    """Attach prompts saved by :func:`save_prompts` to ``clip_model`` (a ``CLIPModel`` of the same shape)."""
    from safetensors.torch import load_file

    src = Path(path)
    if not (src / ADAPTER_CONFIG).is_file() or not (src / ADAPTER_WEIGHTS).is_file():
        raise HFTrustFileNotFoundError(
            f"{src} holds no saved prompts ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} expected)."
        )
    try:
        meta = json.loads((src / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFTrustCacheError(
            f"{src / ADAPTER_CONFIG} is truncated or not JSON ({exc}); save the prompts again "
            f"(FederatedPromptTrainer.save_prompts) or restore the folder from a copy."
        ) from exc
    expected = meta.get("weights_sha256")
    if expected is not None and file_sha256(src / ADAPTER_WEIGHTS) != expected:
        raise HFTrustCacheError(
            f"{src / ADAPTER_WEIGHTS} does not match the SHA-256 recorded in {ADAPTER_CONFIG} (truncated, or "
            f"replaced after saving); save the prompts again or restore the folder from a copy."
        )
    cfg = clip_model.config
    if (cfg.text_config.hidden_size, cfg.vision_config.hidden_size) != (
        meta["text_hidden_size"],
        meta["vision_hidden_size"],
    ):
        raise FPLConfigError(
            f"the prompts were learnt for widths text={meta['text_hidden_size']}, vision={meta['vision_hidden_size']}; "
            f"this CLIPModel has {cfg.text_config.hidden_size}/{cfg.vision_config.hidden_size}. Load the base model "
            f"{meta['base_model_name_or_path']!r}."
        )
    model = CLIPPromptModel(
        clip_model,
        meta["class_names"],
        PromptConfig(**meta["prompt_config"]),
        class_input_ids=torch.tensor(meta["class_input_ids"]),
        class_attention_mask=torch.tensor(meta["class_attention_mask"]),
    )
    try:
        weights = load_file(str(src / ADAPTER_WEIGHTS))
    except Exception as exc:  # safetensors raises its own error types for a cut-off header or body
        raise HFTrustCacheError(
            f"cannot read {src / ADAPTER_WEIGHTS} ({type(exc).__name__}: {exc}); the file is truncated. Save the "
            f"prompts again or restore the folder from a copy."
        ) from exc
    if set(weights) != set(model.prompts):
        raise FPLConfigError(
            f"saved prompt tensors {sorted(weights)} do not match the config's {sorted(model.prompts)}."
        )
    with torch.no_grad():
        for k, v in weights.items():
            model.prompts[k].copy_(v)
    return model
