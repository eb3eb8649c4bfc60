"""ThanoRATrainer: a ``transformers.Trainer`` that adds ThanoRA's subspace regulariser to the loss."""

from __future__ import annotations

from .._trainer import RegularizedTrainer, unwrap_tuner
from .model import ThanoRAModel


def thanora_model(model) -> ThanoRAModel:
    """The :class:`ThanoRAModel` inside a (possibly DDP/accelerate-wrapped) ``PeftModel``."""
    return unwrap_tuner(model, ThanoRAModel, "ThanoRAConfig")


class ThanoRATrainer(RegularizedTrainer):
    """``Trainer`` whose loss is ``L_mix + λ_sp·L_sp (+ λ_in·L_in)``, the regulariser added once per step.

    Train on the ordinary mixed dataset (no task ids reach the model).  Manual loops do the same::

        loss = model(**batch).loss + model.base_model.regularization_loss()

    With ``accelerate``, call it on ``accelerator.unwrap_model(model).base_model``.
    """

    tuner_cls = ThanoRAModel
    config_name = "ThanoRAConfig"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tuner()  # fail at construction, not at the first step

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "task"}  # task ids never reach the model
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
