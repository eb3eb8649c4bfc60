"""Shared PEFT plumbing of the LoRA-family tuners of hf-trust (ThanoRA, LoRASculpt, and the next one).

A LoRA-family tuner keeps PEFT's LoRA layers unchanged (``ΔW = scaling · B A``, merge and forward are
LoRA's) and adds per-layer state, a regulariser or a schedule.  Everything that does not depend on the
method lives here once:

* :class:`LoraFamilyConfig` — a ``LoraConfig`` whose ``from_pretrained`` checks the adapter files first and
  names a truncated ``adapter_config.json`` or ``adapter_model.safetensors`` in its error.
* :class:`LoraFamilyModel` — a ``LoraModel`` with

  - ``_adapter(name)`` / ``_config(name)``: the adapter a call refers to (the active one by default);
  - :meth:`~LoraFamilyModel.tuner_layers`: the adapted LoRA layers, filtered by ``_owns_layer``;
  - :meth:`~LoraFamilyModel.add_layer_state`: per-adapter state on a layer that ``delete_adapter`` removes;
  - :meth:`~LoraFamilyModel.regularization_loss`: the hook that
    :class:`hf_trust.peft_tuners._trainer.RegularizedTrainer` adds to the task loss; a tuner implements
    ``_regularizer(adapter)``;
  - :meth:`~LoraFamilyModel.lora_factors` / :meth:`~LoraFamilyModel.export_as_lora`: the adapter as stock
    LoRA (via :func:`hf_trust.peft_tuners._lora_export.export_lora_adapter`); a tuner whose stored factors
    are not the effective ones (masks) overrides ``_effective_factors``;
  - a training guard: if the model runs two training-mode forward passes with gradients and
    ``regularization_loss`` was never called (and the tuner's regulariser is not off), it warns once,
    naming the tuner's trainer.  Tuners add their own checks in ``_training_warnings``.

A new tuner subclasses both, sets ``config_name`` / ``trainer_name`` on the model, and registers with
:func:`hf_trust.peft_tuners._registry.register_tuner` (see ``peft_tuners/README.md``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from peft import LoraConfig
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.lora import LoraLayer, LoraModel

from hf_trust.errors import HFTrustCacheError

from ._lora_export import CONFIG_FILE, WEIGHTS_FILE


def check_adapter_files(path: str | os.PathLike) -> None:
    """Raise :class:`~hf_trust.errors.HFTrustCacheError` naming the file if a saved adapter folder holds an
    unparsable ``adapter_config.json`` or a truncated/corrupt ``adapter_model.safetensors``.

    Files that are absent are not an error here (the loader reports them); only files that exist and cannot
    be read are.  Cost: the JSON plus the safetensors header, not the tensors.
    """
    folder = os.fspath(path)
    cfg_file = os.path.join(folder, CONFIG_FILE)
    if os.path.isfile(cfg_file):
        _read_config_json(cfg_file)
    weights = os.path.join(folder, WEIGHTS_FILE)
    if os.path.isfile(weights):
        from safetensors import safe_open

        try:
            # safe_open validates the header and that every tensor's byte range lies inside the file.
            with safe_open(weights, framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # safetensors raises its own error types (and OSError); all mean unreadable
            raise HFTrustCacheError(
                f"{weights} is truncated or corrupt ({exc}); save or export the adapter again "
                "(save_pretrained / export_as_lora) or restore the file from its source."
            ) from exc


def _read_config_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFTrustCacheError(
            f"{path} is truncated or not valid JSON ({exc}); save or export the adapter again, or restore the file."
        ) from exc


@dataclass
class LoraFamilyConfig(LoraConfig):
    """``LoraConfig`` base of the LoRA-family tuners: loading names a truncated or corrupt adapter file.

    ``PeftModel.from_pretrained`` reaches :meth:`from_pretrained` of the registered config class once it has
    read ``peft_type``, i.e. before any weight is loaded, so the safetensors file is checked there too.
    """

    @classmethod
    def from_json_file(cls, path_json_file: str, **kwargs: Any) -> dict:
        obj = _read_config_json(path_json_file)
        obj.pop("runtime_config", None)  # runtime-only, as PEFT does
        return obj

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: Optional[str] = None, **kwargs: Any):
        folder = os.path.join(pretrained_model_name_or_path, subfolder or "")
        if os.path.isdir(folder):
            check_adapter_files(folder)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)


class LoraFamilyModel(LoraModel):
    """Base ``LoraModel`` of the LoRA-family tuners of hf-trust.

    Subclasses set:

    * ``config_name`` / ``trainer_name`` (class attributes): names used in error messages and warnings;
    * ``_owns_layer(layer, adapter)``: whether a LoRA layer carries this tuner's state (default: every
      LoRA layer that holds ``adapter``);
    * ``_regularizer(adapter)``: the regulariser to add to the task loss, or ``None`` when there is none
      (default ``None``); the public :meth:`regularization_loss` wraps it;
    * ``_effective_factors(layer, adapter)``: the ``(A, B)`` that define ``ΔW`` (default: the stored
      weights); :meth:`lora_factors` and :meth:`export_as_lora` use it;
    * ``_training_warnings(adapter)``: extra messages for the training guard (default none).
    """

    prefix: str = "lora_"
    config_name: ClassVar[str] = "LoraConfig"
    trainer_name: ClassVar[str] = "transformers.Trainer"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Plain attributes (not buffers): bookkeeping only, never saved.
        self._regularizer_calls = 0
        self._training_forwards = 0
        # Removed by id, not through the handle: a deep-copied model shares the handle's weak reference
        # to the original hook dict, but its own dict holds the hook under the same id.
        self._guard_id = self.model.register_forward_pre_hook(self._training_guard).id

    def _remove_training_guard(self) -> None:
        self.model._forward_pre_hooks.pop(getattr(self, "_guard_id", None), None)

    def _unload_and_optionally_merge(self, *args: Any, **kwargs: Any):
        # The returned transformers model must not keep a hook that points back to this tuner.
        self._remove_training_guard()
        return super()._unload_and_optionally_merge(*args, **kwargs)

    # ------------------------------------------------------------------ adapter resolution
    def _adapter(self, adapter_name: Optional[str] = None) -> str:
        """``adapter_name``, or the (first) active adapter."""
        if adapter_name:
            return adapter_name
        active = self.active_adapter
        return active if isinstance(active, str) else active[0]

    def _config(self, adapter_name: Optional[str] = None) -> LoraConfig:
        return self.peft_config[self._adapter(adapter_name)]

    # ------------------------------------------------------------------ layers and their state
    def _owns_layer(self, layer: LoraLayer, adapter: str) -> bool:
        return True

    def tuner_layers(self, adapter_name: Optional[str] = None) -> Iterator[tuple[str, LoraLayer]]:
        """(module name, LoRA layer) of every layer that carries this tuner's ``adapter_name``."""
        adapter = self._adapter(adapter_name)
        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A and self._owns_layer(module, adapter):
                yield name, module

    @staticmethod
    def add_layer_state(layer: LoraLayer, attr: str, adapter: str, value: Any, persistent: bool = False) -> None:
        """Store ``value`` as ``layer.<attr>[adapter]`` so that ``delete_adapter`` removes it with the adapter.

        With ``persistent=True`` the container is a ``BufferDict`` of tensors saved in the adapter's state dict
        (e.g. masks); otherwise a plain dict that lives only in memory.
        """
        if not hasattr(layer, attr):
            setattr(layer, attr, BufferDict({}, persistent=True) if persistent else {})
        if attr not in layer.other_param_names:
            # An instance attribute: the class-level tuple of LoraLayer stays untouched.
            layer.other_param_names = tuple(layer.other_param_names) + (attr,)
        getattr(layer, attr)[adapter] = value

    # ------------------------------------------------------------------ regulariser hook
    def _regularizer(self, adapter: str) -> Optional[torch.Tensor]:
        return None

    def _zero(self) -> torch.Tensor:
        return next(self.model.parameters()).new_zeros((), dtype=torch.float32)

    def regularization_loss(self, adapter_name: Optional[str] = None) -> torch.Tensor:
        """The term to add to the task loss once per optimizer step (``RegularizedTrainer`` does this).

        A scalar tensor; zero when the tuner has no regulariser or it is switched off.
        """
        self._regularizer_calls += 1
        reg = self._regularizer(self._adapter(adapter_name))
        return self._zero() if reg is None else reg

    def _regularizer_is_off(self, adapter: str) -> bool:
        """True when this adapter's regulariser is switched off (then not calling it is no mistake)."""
        return type(self)._regularizer is LoraFamilyModel._regularizer

    # ------------------------------------------------------------------ training guard
    def _training_warnings(self, adapter: str) -> list[str]:
        return []

    def _training_guard(self, module: torch.nn.Module, args: Any) -> None:
        # Runs before every forward of the wrapped transformers model; after the second training-mode
        # forward with gradients it has seen what it needs and removes itself (no per-step cost after).
        if not (module.training and torch.is_grad_enabled()):
            return
        self._training_forwards += 1
        if self._training_forwards < 2:
            return
        self._remove_training_guard()
        if not self.peft_config or not self.active_adapters:
            return
        adapter = self._adapter()
        messages = list(self._training_warnings(adapter))
        if self._regularizer_calls == 0 and not self._regularizer_is_off(adapter):
            messages.append("its regulariser was never added to the loss (regularization_loss() not called)")
        if messages:
            warnings.warn(
                f"A model built from a {self.config_name} is being trained without its training hooks: "
                + "; ".join(messages)
                + f". Train with {self.trainer_name}, or in a manual loop add "
                "model.base_model.regularization_loss() to the loss (see the tuner's docs).",
                UserWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ export to stock LoRA
    def _effective_factors(self, layer: LoraLayer, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        return layer.lora_A[adapter].weight, layer.lora_B[adapter].weight

    def lora_factors(self, adapter_name: Optional[str] = None) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """module name → ``(A, B, scaling)``: the adapter as plain LoRA factors (``ΔW = scaling · B A``)."""
        adapter = self._adapter(adapter_name)
        out: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
        for name, layer in self.tuner_layers(adapter):
            a, b = self._effective_factors(layer, adapter)
            out[name] = (a.detach(), b.detach(), float(layer.scaling[adapter]))
        return out

    def export_as_lora(self, path: str | os.PathLike, adapter_name: Optional[str] = None) -> LoraConfig:
        """Write the adapter as a stock PEFT LoRA adapter (``peft_type: LORA``; loads without ``import hf_trust``).

        The config is written last, so a crash never leaves new weights next to a config that loads them.
        """
        from ._lora_export import export_lora_adapter

        cfg = self._config(adapter_name)
        return export_lora_adapter(
            self, path, self.lora_factors(adapter_name), task_type=cfg.task_type, fan_in_fan_out=cfg.fan_in_fan_out
        )


def tuner_of(model: Any, tuner_cls: type[LoraFamilyModel] = LoraFamilyModel) -> LoraFamilyModel:
    """The tuner model (``PeftModel.base_model``) inside a possibly DDP/accelerate-wrapped ``PeftModel``."""
    from ._trainer import unwrap_tuner

    return unwrap_tuner(model, tuner_cls, getattr(tuner_cls, "config_name", tuner_cls.__name__))


__all__: list[str] = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "LoraFamilyConfig",
    "LoraFamilyModel",
    "check_adapter_files",
    "tuner_of",
]
