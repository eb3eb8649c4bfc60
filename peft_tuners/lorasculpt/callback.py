"""The training schedule of LoRASculpt as a ``transformers.TrainerCallback``."""

from __future__ import annotations

from transformers import TrainerCallback


def sculpt_model(model):
    """The :class:`LoRASculptModel` inside a (possibly accelerate-wrapped) PeftModel."""
    from .._trainer import unwrap_tuner
    from .model import LoRASculptModel

    return unwrap_tuner(model, LoRASculptModel, "LoRASculptConfig")


class LoRASculptCallback(TrainerCallback):
    """Dense warm-up, one-shot pruning at ``mask_step`` optimizer steps, masks re-applied after every
    optimizer step and before every save.

    ``on_step_begin`` runs once per optimizer step (not per micro-batch), so gradient accumulation does not
    prune repeatedly; a run resumed from a pruned checkpoint finds its masks restored and does not prune again.
    """

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        sculpt = sculpt_model(model)
        if state.global_step >= sculpt._config().mask_step and not sculpt.is_pruned():
            sculpt.compute_masks()

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        sculpt = sculpt_model(model)
        if sculpt._config().remask_after_step:
            sculpt.apply_masks()

    def on_save(self, args, state, control, model=None, **kwargs):
        sculpt_model(model).apply_masks()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        sculpt_model(model).apply_masks()
