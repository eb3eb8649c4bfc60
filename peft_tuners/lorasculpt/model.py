"""LoRASculptModel: PEFT's LoRA with per-tensor magnitude masks and the Conflict Mitigation Regularizer.

The layer math is PEFT's ``lora.Linear`` unchanged: pruned entries are kept exactly zero in place, so
forward, merge and ``get_delta_weight`` stay those of LoRA and merging costs nothing at inference.  The
adapter bookkeeping, the regulariser hook and the export to stock LoRA come from
:class:`~hf_trust.peft_tuners._lora_family.LoraFamilyModel`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Optional

import torch
from peft.tuners.lora import LoraLayer
from peft.utils.integrations import gather_params_ctx

from hf_trust.errors import HFTrustConfigError

from .._lora_family import LoraFamilyModel

MASK_A, MASK_B = "sculpt_mask_A", "sculpt_mask_B"
CMR_CACHE = "_sculpt_cmr_m"


def _set_full(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Write a full tensor into a parameter, and into DeepSpeed's fp32 master copy when one exists
    (ZeRO-1/2 keep one in the optimiser that would overwrite the module's values at the next step)."""
    # PEFT's helper gathers the ZeRO-3 shards (and re-partitions rank 0's write); a no-op otherwise.
    with gather_params_ctx([param], modifier_rank=0), torch.no_grad():
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
    with gather_params_ctx([param], modifier_rank=None):
        return param.detach().clone()


def kept_entries(rho: float, numel: int) -> int:
    """Entries of a ``numel``-entry factor that pruning keeps: ``floor(ρ·numel)`` (the official rule), but at
    least one, so that a small factor (e.g. the 1×r ``lora_B`` of a one-output layer) is not zeroed outright
    and its layer keeps adapting."""
    return max(1, math.floor(rho * numel))


def cmr_weights(weight: torch.Tensor, omega: float, eps: float) -> torch.Tensor:
    """M = tanh(ω·|1 / log(|W/‖W‖_F| + ε)|): larger |W| (more "general knowledge") gets a larger penalty."""
    w = weight.detach().float()
    m_pre = w / w.norm()
    return torch.tanh(omega * (1.0 / torch.log(m_pre.abs() + eps)).abs())


class LoRASculptModel(LoraFamilyModel):
    """PEFT model of LoRASculpt.  Adds :meth:`compute_masks`, :meth:`apply_masks`, :meth:`cmr_loss` and
    :meth:`is_pruned` to :class:`~hf_trust.peft_tuners._lora_family.LoraFamilyModel` (whose
    :meth:`regularization_loss` is ``cmr_lambda · cmr_loss()`` here and whose :meth:`export_as_lora` writes
    the masked factors)."""

    prefix: str = "lora_"
    config_name = "LoRASculptConfig"
    trainer_name = "LoRASculptTrainer (or a Trainer with LoRASculptCallback plus the regulariser)"

    def __init__(self, *args, **kwargs):
        # Set before LoraModel.__init__ injects the layers; the callback or a mask call flips it.
        self._schedule_seen = False
        self.last_cmr_term: Optional[torch.Tensor] = None
        super().__init__(*args, **kwargs)

    def _create_and_replace(self, lora_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        super()._create_and_replace(lora_config, adapter_name, target, target_name, parent, current_key, **kwargs)
        layer = getattr(parent, target_name)
        if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
            return
        a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
        self.add_layer_state(layer, MASK_A, adapter_name, torch.ones_like(a, dtype=torch.bool), persistent=True)
        self.add_layer_state(layer, MASK_B, adapter_name, torch.ones_like(b, dtype=torch.bool), persistent=True)

    def inject_adapter(self, model, adapter_name, *args, **kwargs):
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        self._check_preserve_ratio(adapter_name)

    def _check_preserve_ratio(self, adapter: str) -> None:
        """Warn once when ρ would keep no entry (``floor(ρ·numel) = 0``) of some factor.

        :meth:`compute_masks` keeps at least one entry of every tensor (:func:`kept_entries`), so such a
        factor still trains one weight instead of being zeroed; the warning names the tensors so that a user
        who wanted the exact ρ can raise ``r`` or exclude those modules.  Checked once all layers exist.
        """
        rho = self._config(adapter).preserve_ratio
        tiny = [
            f"{factor} of {name} (shape {tuple(t.shape)})"
            for name, layer in self.tuner_layers(adapter)
            for factor, t in (("lora_A", layer.lora_A[adapter].weight), ("lora_B", layer.lora_B[adapter].weight))
            if math.floor(rho * t.numel()) == 0
        ]
        if not tiny:
            return
        shown = ", ".join(tiny[:5]) + (f" and {len(tiny) - 5} more" if len(tiny) > 5 else "")
        warnings.warn(
            f"LoRASculptConfig.preserve_ratio={rho} keeps floor(ρ·n) = 0 entries of {len(tiny)} LoRA tensor(s): "
            f"{shown}. Pruning keeps one entry (the largest |value|) of each of them instead of zeroing them, so "
            f"their kept fraction is 1/n > ρ. For exactly ρ, use a larger r or leave those modules out of "
            f"target_modules.",
            UserWarning,
            stacklevel=4,
        )

    # ------------------------------------------------------------------ base-class hooks
    def _owns_layer(self, layer: LoraLayer, adapter: str) -> bool:
        return adapter in getattr(layer, MASK_A, {})

    def _effective_factors(self, layer: LoraLayer, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            layer.lora_A[adapter].weight * getattr(layer, MASK_A)[adapter],
            layer.lora_B[adapter].weight * getattr(layer, MASK_B)[adapter],
        )

    def _regularizer(self, adapter: str) -> Optional[torch.Tensor]:
        cfg = self._config(adapter)
        reg = None if cfg.cmr_lambda == 0 else cfg.cmr_lambda * self.cmr_loss(adapter)
        # Kept (detached) so that LoRASculptTrainer can compare the CMR term with the task loss it was added to.
        self.last_cmr_term = None if reg is None else reg.detach()
        return reg

    def _regularizer_is_off(self, adapter: str) -> bool:
        return self._config(adapter).cmr_lambda == 0

    def _training_warnings(self, adapter: str) -> list[str]:
        if self._schedule_seen or self.is_pruned(adapter):
            return []
        return ["its masks are never computed (no LoRASculptCallback), so the adapter stays dense"]

    # ------------------------------------------------------------------ helpers
    def sculpt_layers(self, adapter_name: Optional[str] = None) -> Iterator[tuple[str, LoraLayer]]:
        """(module name, LoRA layer) of every layer carrying LoRASculpt masks for the adapter."""
        return self.tuner_layers(adapter_name)

    def is_pruned(self, adapter_name: Optional[str] = None) -> bool:
        """True once masks were computed (a mask with a zero), e.g. after reloading a pruned checkpoint."""
        adapter = self._adapter(adapter_name)
        return any(not bool(getattr(m, MASK_A)[adapter].all()) for _, m in self.sculpt_layers(adapter))

    # ------------------------------------------------------------------ b2: one-shot pruning
    @torch.no_grad()
    def compute_masks(self, adapter_name: Optional[str] = None, force: bool = False) -> dict[str, float]:
        """Keep the ``max(1, floor(ρ·numel))`` largest-|value| entries of every lora_A and lora_B tensor separately.

        Does nothing when the adapter is already pruned (reloading a checkpoint must not prune again) unless
        ``force``.  Returns the resulting density of each factor tensor.
        """
        adapter = self._adapter(adapter_name)
        rho = self._config(adapter).preserve_ratio
        self._schedule_seen = True
        if self.is_pruned(adapter) and not force:
            return {}
        out = {}
        for name, layer in self.sculpt_layers(adapter):
            for factor, mask_name in ((layer.lora_A[adapter].weight, MASK_A), (layer.lora_B[adapter].weight, MASK_B)):
                full = _get_full(factor)
                k = kept_entries(rho, full.numel())
                mask = torch.zeros(full.numel(), dtype=torch.bool, device=full.device)
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
        self._schedule_seen = True
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
            raise HFTrustConfigError(
                f"LoRASculptConfig.cmr_target_modules={cfg.cmr_target_modules} match no adapted layer; name "
                "suffixes of layers that carry LoRA (e.g. q_proj) or set cmr_lambda=0."
            )
        total = None
        for _, layer in layers:
            a, b = self._effective_factors(layer, adapter)
            # M depends on the frozen W and on (ω, ε) only, so one cache per layer serves every adapter.
            cache = layer.__dict__.setdefault(CMR_CACHE, {}) if cfg.cmr_cache else {}
            m = cache.get((cfg.cmr_omega, cfg.cmr_eps))
            if m is None:
                w = layer.get_base_layer().weight
                w = w.T if getattr(layer, "fan_in_fan_out", False) else w
                m = cmr_weights(w, cfg.cmr_omega, cfg.cmr_eps)
                cache[(cfg.cmr_omega, cfg.cmr_eps)] = m
            delta = b @ a
            if cfg.cmr_apply_scaling:
                delta = delta * layer.scaling[adapter]
            term = (m.to(delta.device, delta.dtype) * delta).norm()
            total = term if total is None else total + term
        return total / len(layers)
