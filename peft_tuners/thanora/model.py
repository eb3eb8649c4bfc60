"""ThanoRAModel: PEFT's LoRA with per-task rank blocks, a cooperative block, task-subspace init and the regulariser."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Optional

import torch
from peft.tuners.lora import LoraLayer

from hf_trust.errors import HFTrustConfigError

from .._lora_family import LoraFamilyModel
from .layer import Slices, cross_block_cosine, ranks_to_slices, subspace_terms, uniform_ranks
from .preprocess import INIT_ATTR

#: Per-adapter state ThanoRA keeps on a LoRA layer (registered so that ``delete_adapter`` removes it).
SLICES_ATTR = "thanora_slices"
COOP_ATTR = "thanora_cooperative"


class ThanoRAModel(LoraFamilyModel):
    """PEFT model of ThanoRA.  Forward and merge are LoRA's; adds :meth:`subspace_loss`,
    :meth:`allocation_report` and :meth:`cross_block_cosine` to the LoRA-family base (which provides
    :meth:`regularization_loss`, :meth:`lora_factors`, :meth:`export_as_lora` and the training guard).

    ``regularization_loss()`` is not added inside ``forward`` (a plain ``PeftModel`` bypasses the tuner's
    forward, which would silently drop it); :class:`ThanoRATrainer` adds it once per step.
    """

    prefix: str = "lora_"
    config_name = "ThanoRAConfig"
    trainer_name = "ThanoRATrainer"

    # ------------------------------------------------------------------ injection
    def _check_allocation_source(self, model: torch.nn.Module, adapter_name: str) -> None:
        """Before injection: decide whether this adapter's task_rank_map is filled in now, and warn when a
        data-driven config meets a model that was never preprocessed."""
        config = self.peft_config[adapter_name]
        # A config that already holds an allocation must cover every target module; an empty one is filled in
        # (uniform or manual split) while the adapter is injected.
        if not hasattr(self, "_thanora_fill"):
            self._thanora_fill: set[str] = set()
        if not (config.allocation_recorded or config.task_rank_map):
            self._thanora_fill.add(adapter_name)
        if config.allocation_recorded or config.task_rank_map or not config.needs_preprocessing:
            return
        if any(hasattr(m, INIT_ATTR) for m in model.modules()):
            return
        # Legal (the adapter still trains, as uniform task blocks with random init), but almost surely a mistake.
        warnings.warn(
            f"get_peft_model got a ThanoRAConfig (rank_allocation={config.rank_allocation!r}, "
            f"task_init={config.task_init!r}) but preprocess_thanora was not run on this model: every layer gets a "
            "uniform split with random init, i.e. no task-aware allocation. Call "
            "preprocess_thanora(model, config, task_batches) before get_peft_model, or set "
            "rank_allocation='uniform' and task_init='random' to ask for this on purpose.",
            UserWarning,
            stacklevel=4,
        )

    def _create_and_replace(self, lora_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        super()._create_and_replace(lora_config, adapter_name, target, target_name, parent, current_key, **kwargs)
        layer = getattr(parent, target_name)
        if not isinstance(layer, LoraLayer) or adapter_name not in layer.lora_A:
            return
        r = layer.r[adapter_name]
        n_tasks = len(lora_config.task_names)
        ranks = lora_config.task_rank_map.get(current_key)
        if ranks is None:
            if adapter_name not in getattr(self, "_thanora_fill", ()):
                raise HFTrustConfigError(
                    f"ThanoRAConfig.task_rank_map has no entry for {current_key} although the adapter's allocation "
                    "was recorded: the saved adapter_config.json is incomplete or edited, so its task blocks cannot "
                    "be rebuilt. Restore adapter_config.json from the training run, or rerun preprocess_thanora."
                )
            budget = lora_config.task_budget(r)
            ranks = list(lora_config.manual_ranks) if lora_config.rank_allocation == "manual" else None
            ranks = ranks or uniform_ranks(budget, n_tasks)
            # Recorded in the config so that the saved adapter rebuilds exactly this split.
            lora_config.task_rank_map[current_key] = list(ranks)
        ranks = [int(x) for x in ranks]
        if len(ranks) != n_tasks or sum(ranks) > r or min(ranks) < 1:
            raise HFTrustConfigError(
                f"ThanoRAConfig.task_rank_map[{current_key!r}] = {ranks} does not split the LoRA rank {r} of that "
                f"layer into {n_tasks} task blocks (plus a cooperative block); rerun preprocess_thanora with this config."
            )
        n_task_rows = sum(ranks)
        self.add_layer_state(layer, SLICES_ATTR, adapter_name, ranks_to_slices(ranks))
        self.add_layer_state(layer, COOP_ATTR, adapter_name, (n_task_rows, r))
        layer._thanora_key = current_key
        base = layer.get_base_layer()
        init = getattr(base, INIT_ATTR, None)
        if init is not None:
            a, b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
            if tuple(init.shape) != (n_task_rows, a.shape[1]):
                raise HFTrustConfigError(
                    f"ThanoRA init for {current_key} has shape {tuple(init.shape)}, the task rows of LoRA A are "
                    f"{(n_task_rows, a.shape[1])}; rerun preprocess_thanora with this config."
                )
            with torch.no_grad():
                # Task rows from the data; the cooperative rows keep PEFT's random LoRA init.
                a[:n_task_rows].copy_(init.to(a.device, a.dtype))
                b.zero_()  # ΔW = 0 at init: the model's output is unchanged
            delattr(base, INIT_ATTR)

    def add_weighted_adapter(self, adapters, weights, adapter_name, *args, **kwargs):
        # LoRA builds the combined adapter's config as a copy of the first adapter's, per-module split included;
        # the combination is a new LoRA (another rank, other modules) whose rows belong to no task, so it gets a
        # fresh split of its own instead of the copied map.
        self._thanora_derived = adapter_name
        try:
            return super().add_weighted_adapter(adapters, weights, adapter_name, *args, **kwargs)
        finally:
            self._thanora_derived = None

    def inject_adapter(self, model, adapter_name, *args, **kwargs):
        if adapter_name == getattr(self, "_thanora_derived", None):
            cfg = self.peft_config[adapter_name]
            # New containers: the copied config shares the first adapter's dicts.
            cfg.task_rank_map, cfg.task_entropy_map, cfg.allocation_recorded = {}, {}, False
            cfg.rank_allocation, cfg.task_init = "uniform", "random"  # nothing data-driven about a combination
        # PeftModel.add_adapter calls inject_adapter directly (no _pre_injection_hook), so the check lives here.
        self._check_allocation_source(model, adapter_name)
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        # Every target module's split is now in task_rank_map (preprocessed or filled at injection).
        self.peft_config[adapter_name].allocation_recorded = True
        getattr(self, "_thanora_fill", set()).discard(adapter_name)

    # ------------------------------------------------------------------ layers
    def _owns_layer(self, layer: LoraLayer, adapter: str) -> bool:
        return adapter in getattr(layer, SLICES_ATTR, {})

    def thanora_layers(self, adapter_name: Optional[str] = None) -> Iterator[tuple[str, LoraLayer, Slices]]:
        """(module name, LoRA layer, task slices) of every adapted layer (the cooperative block follows the slices)."""
        adapter = self._adapter(adapter_name)
        for name, layer in self.tuner_layers(adapter):
            yield name, layer, getattr(layer, SLICES_ATTR)[adapter]

    # ------------------------------------------------------------------ regulariser
    def subspace_loss(self, adapter_name: Optional[str] = None) -> torch.Tensor:
        """L_sp = mean over layers of Σ_{t<s} ‖Â_t Â_sᵀ‖²_F + ‖B_tᵀ B_s‖²_F over task blocks (unweighted; B̂ with
        ``normalize_B``)."""
        return self._terms(adapter_name, with_intra=False)[0]

    def _terms(self, adapter_name: Optional[str] = None, with_intra: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        adapter = self._adapter(adapter_name)
        cfg = self.peft_config[adapter]
        cross, intra = [], []
        for _, layer, slices in self.thanora_layers(adapter):
            c, i = subspace_terms(
                layer.lora_A[adapter].weight,
                layer.lora_B[adapter].weight,
                slices,
                cfg.subspace_factors,
                with_intra=with_intra,
                normalize_B=cfg.normalize_B,
            )
            cross.append(c)
            intra.append(i)
        if not cross:
            zero = next(self.model.parameters()).new_zeros((), dtype=torch.float32)
            return zero, zero
        dev = cross[0].device
        return (torch.stack([c.to(dev) for c in cross]).mean(), torch.stack([i.to(dev) for i in intra]).mean())

    def _regularizer(self, adapter: str) -> Optional[torch.Tensor]:
        """λ_sp · L_sp + λ_in · L_in, added to the task loss once per optimisation step (``regularization_loss``)."""
        if self._regularizer_is_off(adapter):
            return None
        cfg = self.peft_config[adapter]
        cross, intra = self._terms(adapter, with_intra=cfg.intra_lambda > 0)
        return cfg.subspace_lambda * cross + cfg.intra_lambda * intra

    def _regularizer_is_off(self, adapter: str) -> bool:
        cfg = self.peft_config[adapter]
        return cfg.subspace_lambda == 0 and cfg.intra_lambda == 0

    def gradient_norms(
        self, task_loss: torch.Tensor, adapter_name: Optional[str] = None, retain_graph: bool = True
    ) -> dict[str, float]:
        """Norms of the two gradients that training adds, over every trainable parameter, and their ratio.

        Returns ``{"regularizer": ‖∇(λ_sp·L_sp + λ_in·L_in)‖, "task": ‖∇ task_loss‖, "ratio": regularizer / task}``.
        A ratio above 1 means the regulariser, not the task, sets the direction of the step (and, under gradient
        clipping, shrinks the task's part of it).  Costs one extra backward pass of ``task_loss`` (its graph is
        kept for the training step's own backward unless ``retain_graph=False``); the regulariser is evaluated
        anew, so its call does not count as the step's :meth:`regularization_loss`.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        adapter = self._adapter(adapter_name)
        reg = None if self._regularizer_is_off(adapter) else self._regularizer(adapter)
        reg_norm = _grad_norm(reg, params, retain_graph=False) if reg is not None and reg.requires_grad else 0.0
        task_norm = _grad_norm(task_loss, params, retain_graph=retain_graph)
        return {"regularizer": reg_norm, "task": task_norm, "ratio": _ratio(reg_norm, task_norm)}

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
        """One row per adapted layer: ``{"module", "ranks": {task: r_t}, "cooperative": c, "entropy": {task: H_t}}``.

        Use :func:`hf_trust.peft_tuners.thanora.report.format_allocation` for a text table and
        :func:`hf_trust.peft_tuners.thanora.report.plot_allocation` for the per-layer plot.
        """
        adapter = self._adapter(adapter_name)
        cfg = self.peft_config[adapter]
        rows = []
        for name, layer, slices in self.thanora_layers(adapter):
            key = getattr(layer, "_thanora_key", name)
            ent = cfg.task_entropy_map.get(key)
            start, end = getattr(layer, COOP_ATTR)[adapter]
            rows.append(
                {
                    "module": key,
                    "ranks": {t: e - s for t, (s, e) in zip(cfg.task_names, slices)},
                    "cooperative": end - start,
                    "entropy": dict(zip(cfg.task_names, ent)) if ent else None,
                }
            )
        return rows

    # ------------------------------------------------------------------ export
    def export_as_lora(self, path, adapter_name: Optional[str] = None):
        """Write the adapter as a stock PEFT LoRA adapter (``peft_type: LORA``; loads without ``import hf_trust``).

        Refused for a DoRA adapter, whose update also depends on its magnitude vector.
        """
        if self._config(adapter_name).use_dora:
            raise HFTrustConfigError(
                "ThanoRAConfig.use_dora=True: the update includes DoRA's magnitude vector, which a plain LoRA export "
                "cannot carry. Save the adapter with save_pretrained (it loads after `import hf_trust`)."
            )
        return super().export_as_lora(path, adapter_name)


def _grad_norm(loss: torch.Tensor, params: list[torch.Tensor], retain_graph: bool) -> float:
    """‖∂loss/∂params‖₂ over all ``params`` (parameters ``loss`` does not depend on count as 0)."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    sq = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


def _ratio(num: float, den: float) -> float:
    """num / den, with 0/0 = 0 (nothing on either side) and x/0 = inf."""
    if den > 0:
        return num / den
    return 0.0 if num == 0 else float("inf")
