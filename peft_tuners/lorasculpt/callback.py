"""The training schedule of LoRASculpt as a ``transformers.TrainerCallback``."""

from __future__ import annotations

import warnings

from transformers import TrainerCallback


def sculpt_model(model):
    """The :class:`LoRASculptModel` inside a (possibly accelerate-wrapped) PeftModel."""
    from .._lora_family import tuner_of
    from .model import LoRASculptModel

    return tuner_of(model, LoRASculptModel)


class LoRASculptCallback(TrainerCallback):
    """Dense warm-up, one-shot pruning at ``mask_step`` optimizer steps, masks re-applied after every
    optimizer step and before every save.

    ``on_step_begin`` runs once per optimizer step (not per micro-batch), so gradient accumulation does not
    prune repeatedly; a run resumed from a pruned checkpoint finds its masks restored and does not prune again.
    A run of at most ``mask_step`` optimizer steps never prunes; ``on_train_begin`` warns about it.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        sculpt = sculpt_model(model)
        sculpt._schedule_seen = True
        mask_step = sculpt._config().mask_step
        # Pruning happens at the beginning of the step with global_step == mask_step, so it needs
        # max_steps > mask_step (global_step runs 0 .. max_steps - 1 at step begin).
        if state.max_steps and state.max_steps <= mask_step and not sculpt.is_pruned():
            warnings.warn(
                f"LoRASculptConfig.mask_step={mask_step} is not below the run's {state.max_steps} optimizer steps: "
                "the adapter is never pruned and is saved dense (plain LoRA with the CMR) under the LoRASculpt "
                "type. Lower mask_step (the official schedule prunes after 100 of ~3 epochs of steps) or train "
                "longer.",
                UserWarning,
                stacklevel=2,
            )

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
