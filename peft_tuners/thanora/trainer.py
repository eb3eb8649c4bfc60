"""ThanoRATrainer: a ``transformers.Trainer`` that adds ThanoRA's subspace regulariser to the loss."""

from __future__ import annotations

from transformers import Trainer

from .model import ThanoRAModel


def thanora_model(model) -> ThanoRAModel:
    """The :class:`ThanoRAModel` inside a (possibly DDP/accelerate-wrapped) ``PeftModel``."""
    inner = getattr(model, "module", model)
    base = getattr(inner, "base_model", None)
    if not isinstance(base, ThanoRAModel):
        raise TypeError(
            "ThanoRATrainer needs a PeftModel built from a ThanoRAConfig (get_peft_model(model, ThanoRAConfig(...))), "
            f"got {type(inner).__name__} with base_model {type(base).__name__}."
        )
    return base


class ThanoRATrainer(Trainer):
    """``Trainer`` whose loss is ``L_mix + λ_sp·L_sp (+ λ_in·L_in)``, the regulariser added once per step.

    Train on the ordinary mixed dataset (no task ids reach the model).  Manual loops do the same::

        loss = model(**batch).loss + model.base_model.regularization_loss()

    With ``accelerate``, call it on ``accelerator.unwrap_model(model).base_model``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        thanora_model(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "task"}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        reg = thanora_model(model).regularization_loss()
        # When the Trainer treats the task loss as already normalised over the accumulation window it does not
        # divide by the accumulation steps, so this per-micro-batch term is divided here to count once per step.
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs and self.args.gradient_accumulation_steps > 1:
            reg = reg / self.args.gradient_accumulation_steps
        loss = loss + reg.to(loss.device)
        return (loss, outputs) if return_outputs else loss
