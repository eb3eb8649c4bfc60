"""The one thing ThanoRA's and LoRASculpt's trainers add to ``transformers.Trainer``: a tuner regulariser
counted once per optimizer step."""

from __future__ import annotations

from transformers import Trainer

from hf_trust.errors import HFTrustTypeError


def unwrap_tuner(model, tuner_cls: type, config_name: str):
    """The tuner model (``PeftModel.base_model``) inside a possibly DDP/accelerate-wrapped ``PeftModel``."""
    inner = getattr(model, "module", model)
    base = getattr(inner, "base_model", None)
    if not isinstance(base, tuner_cls):
        raise HFTrustTypeError(
            f"this trainer needs a PeftModel built from a {config_name} (get_peft_model(model, {config_name}(...))), "
            f"got {type(inner).__name__} with base_model {type(base).__name__}."
        )
    return base


class RegularizedTrainer(Trainer):
    """``Trainer`` whose loss is the task loss plus ``tuner.regularization_loss()``.

    Subclasses set ``tuner_cls`` and ``config_name``.  When the Trainer treats the task loss as already
    normalised over the accumulation window (``num_items_in_batch`` given and the model accepts loss kwargs)
    it does not divide by the accumulation steps, so the per-micro-batch regulariser is divided here to be
    counted once per optimizer step.

    ``config_name`` defaults to ``tuner_cls.config_name`` (set on every
    :class:`~hf_trust.peft_tuners._lora_family.LoraFamilyModel`).
    """

    tuner_cls: type = object
    config_name: str = ""

    def tuner(self, model=None):
        """The tuner model (``PeftModel.base_model``) of ``model`` (default: the trained model)."""
        name = self.config_name or getattr(self.tuner_cls, "config_name", self.tuner_cls.__name__)
        return unwrap_tuner(model if model is not None else self.model, self.tuner_cls, name)

    def regularizer_scale(self, num_items_in_batch=None) -> float:
        """Factor of the regulariser in one micro-batch's loss: 1/accumulation steps when the Trainer does not
        divide that loss itself (see the class docstring), else 1."""
        if (
            num_items_in_batch is not None
            and self.model_accepts_loss_kwargs
            and self.args.gradient_accumulation_steps > 1
        ):
            return 1.0 / self.args.gradient_accumulation_steps
        return 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        reg = self.tuner(model).regularization_loss() * self.regularizer_scale(num_items_in_batch)
        loss = loss + reg.to(loss.device)
        return (loss, outputs) if return_outputs else loss
