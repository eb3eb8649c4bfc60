"""LoRASculptTrainer: a ``transformers.Trainer`` that adds λ·L_CMR to the loss and runs the mask schedule."""

from __future__ import annotations

from .._trainer import RegularizedTrainer
from .callback import LoRASculptCallback
from .model import LoRASculptModel


class LoRASculptTrainer(RegularizedTrainer):
    """``Trainer`` + :class:`LoRASculptCallback` + the CMR in ``compute_loss``.

    Manual loops do the same by hand::

        loss = model(**batch).loss + model.base_model.regularization_loss()
        loss.backward(); optimizer.step(); model.base_model.apply_masks()
        if step + 1 == config.mask_step: model.base_model.compute_masks()

    With ``accelerate``, call the same methods on ``accelerator.unwrap_model(model).base_model``.
    """

    tuner_cls = LoRASculptModel
    config_name = "LoRASculptConfig"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any(isinstance(cb, LoRASculptCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(LoRASculptCallback())
