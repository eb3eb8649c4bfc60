"""Export any LoRA-shaped adapter as a stock PEFT LoRA adapter (``peft_type: LORA``).

Tuners of this project whose update is ``ΔW = scaling · B A`` (ThanoRA, LoRASculpt) write their factors
through :func:`export_lora_adapter`, so the result loads with plain ``PeftModel.from_pretrained`` (and
serving stacks that read LoRA) without ``import hf_trust``::

    factors = {"model.layers.0.self_attn.q_proj": (A, B, scaling), ...}
    export_lora_adapter(peft_model, "out/lora", factors)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from peft import LoraConfig
from safetensors.torch import save_file


def export_lora_adapter(
    peft_model: Any,
    path: str | os.PathLike,
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]],
    task_type: Any = None,
    fan_in_fan_out: bool = False,
) -> LoraConfig:
    """Write ``factors`` (module path → ``(A (r×in), B (out×r), scaling)``) as a LoRA adapter folder.

    Per-module ranks and alphas go into ``rank_pattern`` / ``alpha_pattern`` (``alpha = scaling · r``), so
    every module keeps its exact scaling.  Returns the written ``LoraConfig``.
    """
    if not factors:
        raise ValueError("no LoRA factors to export; the adapter targets no module.")
    ranks = {name: int(a.shape[0]) for name, (a, _, _) in factors.items()}
    r0 = max(set(ranks.values()), key=list(ranks.values()).count)
    scal = {name: float(s) for name, (_, _, s) in factors.items()}
    active = getattr(peft_model, "active_adapter", "default")
    active = active if isinstance(active, str) else active[0]
    src = getattr(peft_model, "peft_config", {}).get(active)
    cfg = LoraConfig(
        r=r0,
        lora_alpha=scal[next(iter(factors))] * r0,
        target_modules=sorted(factors),
        rank_pattern={f"^{n}$": r for n, r in ranks.items() if r != r0},
        alpha_pattern={f"^{n}$": scal[n] * ranks[n] for n in factors},
        task_type=task_type or getattr(src, "task_type", None),
        base_model_name_or_path=getattr(src, "base_model_name_or_path", None),
        fan_in_fan_out=fan_in_fan_out,
        init_lora_weights=False,
    )
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for name, (a, b, _) in factors.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.detach().to(torch.float32).contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.detach().to(torch.float32).contiguous().cpu()
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    cfg.save_pretrained(str(path))
    return cfg
