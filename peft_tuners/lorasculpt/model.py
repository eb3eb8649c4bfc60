"""LoRASculptModel: PEFT's LoRA with per-tensor magnitude masks and the Conflict Mitigation Regularizer.

The layer math is PEFT's ``lora.Linear`` unchanged: pruned entries are kept exactly zero in place, so
forward, merge and ``get_delta_weight`` stay those of LoRA and merging costs nothing at inference.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Optional

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.lora import LoraLayer, LoraModel

from hf_trust.trainers.federated.deepspeed_utils import gathered

MASK_A, MASK_B = "sculpt_mask_A", "sculpt_mask_B"


def _set_full(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Write a full tensor into a parameter, and into DeepSpeed's fp32 master copy when one exists
    (ZeRO-1/2 keep one in the optimiser that would overwrite the module's values at the next step)."""
    with gathered([param], modifier_rank=0), torch.no_grad():
        param.copy_(value.to(param.dtype))
    if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):
        from deepspeed.utils import safe_set_full_fp32_param

        safe_set_full_fp32_param(param, value.float())


def _get_full(param: torch.nn.Parameter) -> torch.Tensor:
    if hasattr(param, "_hp_mapping") or hasattr(param, "ds_id"):
        from deepspeed.utils import safe_get_full_fp32_param

        full = safe_get_full_fp32_param(param)
        if full is not None:
            return full.detach()
    with gathered([param], modifier_rank=None):
        return param.detach().clone()


def cmr_weights(weight: torch.Tensor, omega: float, eps: float) -> torch.Tensor:
    """M = tanh(ω·|1 / log(|W/‖W‖_F| + ε)|): larger |W| (more "general knowledge") gets a larger penalty."""
    w = weight.detach().float()
    m_pre = w / w.norm()
    return torch.tanh(omega * (1.0 / torch.log(m_pre.abs() + eps)).abs())


class LoRASculptModel(LoraModel):
    """PEFT model of LoRASculpt.  Adds :meth:`compute_masks`, :meth:`apply_masks`, :meth:`cmr_loss`,
    :meth:`regularization_loss` and :meth:`export_as_lora` to ``LoraModel``."""

    prefix: str = "lora_"

    def _create_and_replace(self, lora_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        super()._create_and_replace(lora_config, adapter_name, target, target_name, parent, current_key, **kwargs)
        layer = getattr(parent, target_name)
        if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
            return
        for name in (MASK_A, MASK_B):
            if not hasattr(layer, name):
                setattr(layer, name, BufferDict({}, persistent=True))
                layer.other_param_names = tuple(layer.other_param_names) + (name,)
        a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
        getattr(layer, MASK_A)[adapter_name] = torch.ones_like(a, dtype=torch.bool)
        getattr(layer, MASK_B)[adapter_name] = torch.ones_like(b, dtype=torch.bool)
        layer._sculpt_key = current_key

    # ------------------------------------------------------------------ helpers
    def _adapter(self, adapter_name: Optional[str] = None) -> str:
        if adapter_name:
            return adapter_name
        active = self.active_adapter
        return active if isinstance(active, str) else active[0]

    def _config(self, adapter_name: Optional[str] = None):
        return self.peft_config[self._adapter(adapter_name)]

    def sculpt_layers(self, adapter_name: Optional[str] = None) -> Iterator[tuple[str, LoraLayer]]:
        adapter = self._adapter(adapter_name)
        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A and hasattr(module, MASK_A):
                yield name, module

    def is_pruned(self, adapter_name: Optional[str] = None) -> bool:
        """True once masks were computed (a mask with a zero), e.g. after reloading a pruned checkpoint."""
        adapter = self._adapter(adapter_name)
        return any(not bool(getattr(m, MASK_A)[adapter].all()) for _, m in self.sculpt_layers(adapter))

    # ------------------------------------------------------------------ b2: one-shot pruning
    @torch.no_grad()
    def compute_masks(self, adapter_name: Optional[str] = None, force: bool = False) -> dict[str, float]:
        """Keep the ``floor(ρ·numel)`` largest-|value| entries of every lora_A and lora_B tensor separately.

        Does nothing when the adapter is already pruned (reloading a checkpoint must not prune again) unless
        ``force``.  Returns the resulting density of each factor tensor.
        """
        adapter = self._adapter(adapter_name)
        rho = self._config(adapter).preserve_ratio
        if self.is_pruned(adapter) and not force:
            return {}
        out = {}
        for name, layer in self.sculpt_layers(adapter):
            for factor, mask_name in ((layer.lora_A[adapter].weight, MASK_A), (layer.lora_B[adapter].weight, MASK_B)):
                full = _get_full(factor)
                k = math.floor(rho * full.numel())
                mask = torch.zeros(full.numel(), dtype=torch.bool, device=full.device)
                if k > 0:
                    mask[full.abs().flatten().topk(k).indices] = True
                mask = mask.view_as(full)
                getattr(layer, mask_name)[adapter] = mask.to(factor.device)
                _set_full(factor, full * mask)
                out[f"{name}.{mask_name}"] = k / full.numel()
        return out

    @torch.no_grad()
    def apply_masks(self, adapter_name: Optional[str] = None) -> None:
        """Force pruned entries back to exactly zero (after every optimizer step and before saving)."""
        adapter = self._adapter(adapter_name)
        for _, layer in self.sculpt_layers(adapter):
            for factor, mask_name in ((layer.lora_A[adapter].weight, MASK_A), (layer.lora_B[adapter].weight, MASK_B)):
                mask = getattr(layer, mask_name)[adapter]
                if not bool(mask.all()):
                    _set_full(factor, _get_full(factor) * mask.to(factor.device))

    # ------------------------------------------------------------------ b5: CMR
    def cmr_layers(self, adapter_name: Optional[str] = None) -> list[tuple[str, LoraLayer]]:
        targets = self._config(adapter_name).cmr_target_modules or []
        return [
            (n, m)
            for n, m in self.sculpt_layers(adapter_name)
            if any(n.split(".")[-1] == t or n.endswith(t) for t in targets)
        ]

    def cmr_loss(self, adapter_name: Optional[str] = None) -> torch.Tensor:
        """L_CMR = (1/N) Σ_layers ‖M ⊙ (M_B⊙B)(M_A⊙A)‖_F: plain (not squared) Frobenius norm, no α/r scaling
        unless ``cmr_apply_scaling``; M from the frozen weight, cached once per layer when ``cmr_cache``."""
        adapter = self._adapter(adapter_name)
        cfg = self._config(adapter)
        layers = self.cmr_layers(adapter)
        if not layers:
            raise ValueError(
                f"cmr_target_modules={cfg.cmr_target_modules} match no adapted layer; name suffixes of layers "
                "that carry LoRA (e.g. q_proj) or set cmr_lambda=0."
            )
        total = None
        for _, layer in layers:
            a = layer.lora_A[adapter].weight * getattr(layer, MASK_A)[adapter]
            b = layer.lora_B[adapter].weight * getattr(layer, MASK_B)[adapter]
            m = getattr(layer, "_sculpt_cmr_m", None) if cfg.cmr_cache else None
            if m is None:
                w = layer.get_base_layer().weight
                w = w.T if getattr(layer, "fan_in_fan_out", False) else w
                m = cmr_weights(w, cfg.cmr_omega, cfg.cmr_eps)
                if cfg.cmr_cache:
                    layer._sculpt_cmr_m = m
            delta = b @ a
            if cfg.cmr_apply_scaling:
                delta = delta * layer.scaling[adapter]
            term = (m.to(delta.device, delta.dtype) * delta).norm()
            total = term if total is None else total + term
        return total / len(layers)

    def regularization_loss(self, adapter_name: Optional[str] = None) -> torch.Tensor:
        """λ·L_CMR — add once per optimizer step to the task loss (LoRASculptTrainer does this)."""
        cfg = self._config(adapter_name)
        if cfg.cmr_lambda == 0:
            return torch.zeros((), device=next(self.model.parameters()).device)
        return cfg.cmr_lambda * self.cmr_loss(adapter_name)

    # ------------------------------------------------------------------ export
    def lora_factors(self, adapter_name: Optional[str] = None) -> dict:
        adapter = self._adapter(adapter_name)
        out = {}
        for name, layer in self.sculpt_layers(adapter):
            a = layer.lora_A[adapter].weight * getattr(layer, MASK_A)[adapter]
            b = layer.lora_B[adapter].weight * getattr(layer, MASK_B)[adapter]
            out[name] = (a, b, layer.scaling[adapter])
        return out

    def export_as_lora(self, path, adapter_name: Optional[str] = None):
        """Write the (masked) adapter as a stock PEFT LoRA adapter (no masks, ``peft_type: LORA``)."""
        from .._lora_export import export_lora_adapter

        cfg = self._config(adapter_name)
        return export_lora_adapter(
            self, path, self.lora_factors(adapter_name), task_type=cfg.task_type, fan_in_fan_out=cfg.fan_in_fan_out
        )
