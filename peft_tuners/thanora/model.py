"""ThanoRAModel: PEFT's LoRA with per-task rank blocks, task-subspace init and the subspace regulariser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch
from peft.tuners.lora import LoraLayer, LoraModel

from .layer import Slices, cross_block_cosine, ranks_to_slices, subspace_terms, uniform_ranks
from .preprocess import INIT_ATTR


class ThanoRAModel(LoraModel):
    """PEFT model of ThanoRA.  Forward and merge are LoRA's; adds :meth:`subspace_loss`,
    :meth:`regularization_loss`, :meth:`allocation_report`, :meth:`cross_block_cosine`, :meth:`export_as_lora`.

    ``regularization_loss()`` is not added inside ``forward`` (a plain ``PeftModel`` bypasses the tuner's
    forward, which would silently drop it); :class:`ThanoRATrainer` adds it once per step.
    """

    prefix: str = "lora_"

    def _create_and_replace(self, lora_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        super()._create_and_replace(lora_config, adapter_name, target, target_name, parent, current_key, **kwargs)
        layer = getattr(parent, target_name)
        if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
            return
        r = layer.r[adapter_name]
        ranks = lora_config.task_rank_map.get(current_key)
        if ranks is None:
            ranks = list(lora_config.manual_ranks) if lora_config.rank_allocation == "manual" else None
            ranks = ranks or uniform_ranks(r, len(lora_config.task_names))
        if len(ranks) != len(lora_config.task_names) or sum(ranks) != r:
            raise ValueError(
                f"ThanoRA: task ranks {ranks} of {current_key} do not split its LoRA rank {r} over "
                f"{len(lora_config.task_names)} tasks; rerun preprocess_thanora with this config."
            )
        if not hasattr(layer, "thanora_slices"):
            layer.thanora_slices = {}
        layer.thanora_slices[adapter_name] = ranks_to_slices(ranks)
        layer._thanora_key = current_key
        base = layer.get_base_layer()
        init = getattr(base, INIT_ATTR, None)
        if init is not None:
            a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            if tuple(init.shape) != tuple(a.shape):
                raise ValueError(
                    f"ThanoRA init for {current_key} has shape {tuple(init.shape)}, LoRA A is {tuple(a.shape)}."
                )
            with torch.no_grad():
                a.copy_(init.to(a.device, a.dtype))
                b.zero_()  # ΔW = 0 at init: the model's output is unchanged
            delattr(base, INIT_ATTR)

    # ------------------------------------------------------------------ helpers
    def _adapter(self, adapter_name: Optional[str] = None) -> str:
        if adapter_name:
            return adapter_name
        active = self.active_adapter
        return active if isinstance(active, str) else active[0]

    def thanora_layers(self, adapter_name: Optional[str] = None) -> Iterator[tuple[str, LoraLayer, Slices]]:
        """(module name, LoRA layer, task slices) of every adapted layer."""
        adapter = self._adapter(adapter_name)
        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer) and adapter in getattr(module, "thanora_slices", {}):
                yield name, module, module.thanora_slices[adapter]

    # ------------------------------------------------------------------ regulariser
    def subspace_loss(self, adapter_name: Optional[str] = None) -> torch.Tensor:
        """L_sp = mean over layers of Σ_{t<s} ‖Â_t Â_sᵀ‖²_F + ‖B̂_tᵀ B̂_s‖²_F (unweighted)."""
        return self._terms(adapter_name, with_intra=False)[0]

    def _terms(self, adapter_name: Optional[str] = None, with_intra: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        adapter = self._adapter(adapter_name)
        cfg = self.peft_config[adapter]
        cross, intra, n = [], [], 0
        for _, layer, slices in self.thanora_layers(adapter):
            c, i = subspace_terms(
                layer.lora_A[adapter].weight,
                layer.lora_B[adapter].weight,
                slices,
                cfg.regularize_B,
                with_intra=with_intra,
            )
            cross.append(c)
            intra.append(i)
            n += 1
        if n == 0:
            p = next(self.model.parameters())
            zero = p.new_zeros((), dtype=torch.float32)
            return zero, zero
        dev = cross[0].device
        return (torch.stack([c.to(dev) for c in cross]).mean(), torch.stack([i.to(dev) for i in intra]).mean())

    def regularization_loss(self, adapter_name: Optional[str] = None) -> torch.Tensor:
        """λ_sp · L_sp + λ_in · L_in, the term to add to the task loss once per optimisation step."""
        cfg = self.peft_config[self._adapter(adapter_name)]
        if cfg.subspace_lambda == 0 and cfg.intra_lambda == 0:
            p = next(self.model.parameters())
            return p.new_zeros((), dtype=torch.float32)
        cross, intra = self._terms(adapter_name, with_intra=cfg.intra_lambda > 0)
        return cfg.subspace_lambda * cross + cfg.intra_lambda * intra

    @torch.no_grad()
    def cross_block_cosine(self, adapter_name: Optional[str] = None) -> dict[str, float]:
        """Mean |cos| between rows of A (and columns of B) of different task blocks, over layers."""
        adapter = self._adapter(adapter_name)
        a_vals, b_vals = [], []
        for _, layer, slices in self.thanora_layers(adapter):
            a_vals.append(cross_block_cosine(layer.lora_A[adapter].weight, slices))
            b_vals.append(cross_block_cosine(layer.lora_B[adapter].weight.T, slices))
        mean = lambda v: sum(v) / len(v) if v else 0.0  # noqa: E731
        return {"A": mean(a_vals), "B": mean(b_vals)}

    # ------------------------------------------------------------------ reporting
    def allocation_report(self, adapter_name: Optional[str] = None) -> list[dict]:
        """One row per adapted layer: ``{"module", "ranks": {task: r_t}, "entropy": {task: H_t}}``.

        Use :func:`hf_trust.peft_tuners.thanora.report.format_allocation` for a text table and
        :func:`hf_trust.peft_tuners.thanora.report.plot_allocation` for the per-layer plot.
        """
        adapter = self._adapter(adapter_name)
        cfg = self.peft_config[adapter]
        rows = []
        for name, layer, slices in self.thanora_layers(adapter):
            key = getattr(layer, "_thanora_key", name)
            ent = cfg.task_entropy_map.get(key)
            rows.append(
                {
                    "module": key,
                    "ranks": {t: e - s for t, (s, e) in zip(cfg.task_names, slices)},
                    "entropy": dict(zip(cfg.task_names, ent)) if ent else None,
                }
            )
        return rows

    # ------------------------------------------------------------------ export
    def lora_factors(self, adapter_name: Optional[str] = None) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """module name → (A, B, scaling): the adapter as plain LoRA factors."""
        adapter = self._adapter(adapter_name)
        out = {}
        for name, layer, _ in self.thanora_layers(adapter):
            out[name] = (
                layer.lora_A[adapter].weight.detach(),
                layer.lora_B[adapter].weight.detach(),
                float(layer.scaling[adapter]),
            )
        return out

    def export_as_lora(self, path, adapter_name: Optional[str] = None):
        """Write the adapter as a stock PEFT LoRA adapter (``peft_type: LORA``, no ``import hf_trust`` to load)."""
        from .._lora_export import export_lora_adapter

        cfg = self.peft_config[self._adapter(adapter_name)]
        return export_lora_adapter(
            self, path, self.lora_factors(adapter_name), task_type=cfg.task_type, fan_in_fan_out=cfg.fan_in_fan_out
        )
