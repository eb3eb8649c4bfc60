"""ThanoRATrainer: a ``transformers.Trainer`` that adds ThanoRA's subspace regulariser to the loss."""

from __future__ import annotations

from typing import Optional

import torch

from hf_trust.errors import HFTrustConfigError

from .._trainer import RegularizedTrainer, unwrap_tuner
from .model import ThanoRAModel, _ratio

#: Name of the logged metric: ‖∇ regulariser‖ / ‖∇ task loss‖ on the measured micro-batch.
RATIO_METRIC = "thanora_grad_ratio"


def thanora_model(model) -> ThanoRAModel:
    """The :class:`ThanoRAModel` inside a (possibly DDP/accelerate-wrapped) ``PeftModel``."""
    return unwrap_tuner(model, ThanoRAModel, "ThanoRAConfig")


class ThanoRATrainer(RegularizedTrainer):
    """``Trainer`` whose loss is ``L_mix + λ_sp·L_sp (+ λ_in·L_in)``, the regulariser added once per step.

    Train on the ordinary mixed dataset (no task ids reach the model).  Manual loops do the same::

        loss = model(**batch).loss + model.base_model.regularization_loss()

    With ``accelerate``, call it on ``accelerator.unwrap_model(model).base_model``.

    Every ``grad_ratio_steps`` optimizer steps (default: ``args.logging_steps``; ``0`` turns it off) the trainer
    measures, on that step's first micro-batch, the ratio ‖∇ regulariser‖ / ‖∇ task loss‖ over the trainable
    parameters and logs it as ``thanora_grad_ratio`` (mean of the measurements since the previous log), with
    the two norms as ``thanora_grad_norm_reg`` / ``thanora_grad_norm_task``; ``grad_ratio_history`` keeps every
    measurement.  A ratio above 1 means the regulariser, not the task, drives the step.  A measurement costs one
    extra backward pass of that micro-batch; it is skipped with several processes (a second backward would
    confuse DDP's gradient reducer) and with gradient checkpointing (reentrant checkpoints allow one backward).

    Args:
        grad_ratio_steps (`int`, *optional*): measure every this many optimizer steps; ``None`` = logging_steps.
    """

    tuner_cls = ThanoRAModel
    config_name = "ThanoRAConfig"

    def __init__(self, *args, grad_ratio_steps: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tuner()  # fail at construction, not at the first step
        if grad_ratio_steps is not None and (isinstance(grad_ratio_steps, bool) or int(grad_ratio_steps) < 0):
            raise HFTrustConfigError(
                f"ThanoRATrainer grad_ratio_steps must be an integer ≥ 0 (0 = off), got {grad_ratio_steps!r}."
            )
        self.grad_ratio_steps = grad_ratio_steps
        self.grad_ratio_history: list[dict[str, float]] = []
        self._ratio_pending: list[dict[str, float]] = []
        self._ratio_step = -1

    def _ratio_due(self, model) -> bool:
        every = self.grad_ratio_steps
        if every is None:
            # The state holds logging_steps as a step count (the arguments may give a fraction of the run).
            every = int(getattr(self.state, "logging_steps", None) or self.args.logging_steps)
        if every <= 0 or not (model.training and torch.is_grad_enabled()):
            return False
        if self.args.world_size > 1 or self.args.gradient_checkpointing:
            return False
        step = self.state.global_step + 1  # the optimizer step this micro-batch belongs to
        return step % every == 0 and step != self._ratio_step

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "task"}  # task ids never reach the model
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if self._ratio_due(model):
            self._measure(model, loss, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _measure(self, model, loss: torch.Tensor, num_items_in_batch) -> None:
        """Split this micro-batch's gradient into its task and regulariser parts and record their norms."""
        tuner = self.tuner(model)
        params = [p for p in model.parameters() if p.requires_grad]
        adapter = tuner._adapter(None)
        total = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        reg_grads: list[Optional[torch.Tensor]] = [None] * len(params)
        if not tuner._regularizer_is_off(adapter):
            # The regulariser evaluated anew, scaled as in the loss, so that task = total − regulariser exactly.
            reg = tuner._regularizer(adapter) * self.regularizer_scale(num_items_in_batch)
            if reg.requires_grad:
                reg_grads = list(torch.autograd.grad(reg, params, allow_unused=True))
        sq_reg = sq_task = 0.0
        for g_all, g_reg in zip(total, reg_grads):
            g_all = None if g_all is None else g_all.detach().double()
            g_reg = None if g_reg is None else g_reg.detach().double()
            if g_reg is not None:
                sq_reg += float(g_reg.pow(2).sum())
            if g_all is not None:
                sq_task += float((g_all - g_reg if g_reg is not None else g_all).pow(2).sum())
        row = {"step": float(self.state.global_step + 1), "regularizer": sq_reg**0.5, "task": sq_task**0.5}
        row["ratio"] = _ratio(row["regularizer"], row["task"])
        self._ratio_step = int(row["step"])
        self.grad_ratio_history.append(row)
        self._ratio_pending.append(row)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._ratio_pending and "loss" in logs:  # training logs only, not evaluation ones
            n = len(self._ratio_pending)
            logs[RATIO_METRIC] = sum(r["ratio"] for r in self._ratio_pending) / n
            logs["thanora_grad_norm_reg"] = sum(r["regularizer"] for r in self._ratio_pending) / n
            logs["thanora_grad_norm_task"] = sum(r["task"] for r in self._ratio_pending) / n
            self._ratio_pending = []
        super().log(logs, *args, **kwargs)
