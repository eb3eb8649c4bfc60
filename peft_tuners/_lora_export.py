"""Export any LoRA-shaped adapter as a stock PEFT LoRA adapter (``peft_type: LORA``).

Tuners of this project whose update is ``ΔW = scaling · B A`` (ThanoRA, LoRASculpt) write their factors
through :func:`export_lora_adapter`, so the result loads with plain ``PeftModel.from_pretrained`` (and
serving stacks that read LoRA) without ``import hf_trust``::

    factors = {"model.layers.0.self_attn.q_proj": (A, B, scaling), ...}
    export_lora_adapter(peft_model, "out/lora", factors)

Writes are atomic and the config comes last: an existing ``adapter_config.json`` is removed first, then the
weights and finally the new config are each written through :mod:`hf_trust.atomic`.  A crash at any point
leaves either the old complete adapter minus its config (not loadable, so never silently mixed) or the new
complete adapter; other files in the folder are left alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from safetensors.torch import save_file

from hf_trust.atomic import atomic_save, atomic_write_text
from hf_trust.errors import HFTrustConfigError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


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
        raise HFTrustConfigError("no LoRA factors to export; the adapter targets no module.")
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
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (a, b, _) in factors.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.detach().to(torch.float32).contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.detach().to(torch.float32).contiguous().cpu()
    # Serialise the config before touching the folder, so a config error leaves the old adapter intact.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-config-") as tmp:
        cfg.save_pretrained(tmp)
        config_text = (Path(tmp) / CONFIG_FILE).read_text(encoding="utf-8")
    # Invalidate an older adapter first: new weights must never sit next to an old config that loads them.
    (folder / CONFIG_FILE).unlink(missing_ok=True)
    atomic_save(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    atomic_write_text(folder / CONFIG_FILE, config_text)
    return cfg
