"""LoRASculptTrainer: a ``transformers.Trainer`` that adds λ·L_CMR to the loss and runs the mask schedule."""

from __future__ import annotations

import math
import warnings

from hf_trust.errors import HFTrustConfigError

from .._trainer import RegularizedTrainer
from .callback import LoRASculptCallback
from .model import LoRASculptModel

#: λ·L_CMR above this multiple of the task loss "dominates": the step then mostly shrinks the masked update
#: instead of fitting the data.  The official λ = 1e-3 keeps the term orders of magnitude below the task loss.
CMR_DOMINANCE_RATIO = 10.0


class LoRASculptTrainer(RegularizedTrainer):
    """``Trainer`` + :class:`LoRASculptCallback` + the CMR in ``compute_loss``.

    ``compute_loss`` also guards the scale of the CMR: a non-finite λ·L_CMR raises
    :class:`~hf_trust.errors.HFTrustConfigError`, and a term more than ``CMR_DOMINANCE_RATIO`` times the task
    loss warns once (a λ far above the official 1e-3 turns the run into shrinking ``BA`` alone, with
    gradients that overflow after a step or two while the logged loss stays finite).

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
        self._cmr_warned = False
        if not any(isinstance(cb, LoRASculptCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(LoRASculptCallback())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        self._check_cmr_scale(model, loss, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _check_cmr_scale(self, model, loss, num_items_in_batch) -> None:
        """Error on a non-finite CMR term; warn once when it outweighs the task loss ``CMR_DOMINANCE_RATIO``-fold."""
        tuner = self.tuner(model)
        term = tuner.last_cmr_term
        if term is None:
            return
        lam = tuner._config().cmr_lambda
        cmr = float(term)
        if not math.isfinite(cmr):
            raise HFTrustConfigError(
                f"the CMR term λ·L_CMR is {cmr} at step {self.state.global_step} (LoRASculptConfig.cmr_lambda={lam}); "
                f"the loss and every gradient would be non-finite. Use a λ near the official 1e-3."
            )
        # The regulariser as added to this micro-batch's loss (divided by the accumulation steps in exactly the
        # case where the task loss is already normalised over the window).
        cmr_added = cmr * self.regularizer_scale(num_items_in_batch)
        total = float(loss.detach())
        # "More than RATIO times the task loss" as a share of the total, which stays exact when the task loss
        # is lost in rounding next to a huge term (total − term would then be noise).
        if not self._cmr_warned and total > 0 and cmr_added > CMR_DOMINANCE_RATIO / (1 + CMR_DOMINANCE_RATIO) * total:
            self._cmr_warned = True
            warnings.warn(
                f"the CMR term λ·L_CMR = {cmr_added:.3g} is {100 * cmr_added / total:.4g} % of the loss {total:.3g} at "
                f"step {self.state.global_step} (LoRASculptConfig.cmr_lambda={lam}), i.e. more than "
                f"{CMR_DOMINANCE_RATIO:g}× the task loss: training mostly shrinks the LoRA update instead of fitting "
                f"the data, and a large λ overflows the gradients. The official λ is 1e-3; lower cmr_lambda.",
                UserWarning,
                stacklevel=2,
            )
