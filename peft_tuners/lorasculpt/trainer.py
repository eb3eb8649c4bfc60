"""LoRASculptTrainer: a ``transformers.Trainer`` that adds λ·L_CMR to the loss and runs the mask schedule."""

from __future__ import annotations

from transformers import Trainer

from .callback import LoRASculptCallback, sculpt_model


class LoRASculptTrainer(Trainer):
    """``Trainer`` + :class:`LoRASculptCallback` + the CMR in ``compute_loss``.

    Manual loops do the same by hand::

        loss = model(**batch).loss + model.base_model.regularization_loss()
        loss.backward(); optimizer.step(); model.base_model.apply_masks()
        if step + 1 == config.mask_step: model.base_model.compute_masks()

    With ``accelerate``, call the same methods on ``accelerator.unwrap_model(model).base_model``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any(isinstance(cb, LoRASculptCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(LoRASculptCallback())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        reg = sculpt_model(model).regularization_loss()
        # When the Trainer treats the task loss as already normalised over the accumulation window it does
        # not divide by the accumulation steps, so a per-micro-batch term must be divided here.
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs and self.args.gradient_accumulation_steps > 1:
            reg = reg / self.args.gradient_accumulation_steps
        loss = loss + reg.to(loss.device)
        return (loss, outputs) if return_outputs else loss
