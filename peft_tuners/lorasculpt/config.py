"""Configuration of LoRASculpt (defaults from the official code)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Optional

from peft.utils import PeftType

from hf_trust.errors import HFTrustConfigError

from .._lora_family import LoraFamilyConfig


def _finite(name: str, value: object) -> float:
    """``value`` as a float, or a clear error when it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise HFTrustConfigError(f"LoRASculptConfig.{name} must be a finite number, got {value!r}.")
    return float(value)


@dataclass
class LoRASculptConfig(LoraFamilyConfig):
    """LoRA with one-shot magnitude-pruned factors and the Conflict Mitigation Regularizer (CMR).

    Every ``LoraConfig`` field applies (the official setup: ``r=32, lora_alpha=64, lora_dropout=0.05``, every
    linear layer of the language model only).  On a vision-language model ``target_modules="all-linear"`` also
    adapts the vision tower and the projector, which the official script does not; to match it, name the
    language model's projections, e.g. ``target_modules=".*language_model.*(q|k|v|o|gate|up|down)_proj"``
    (a regex PEFT matches against the full module name; LLaVA-style module names).  Added fields:

    Args:
        preserve_ratio (`float`, defaults to `0.1`):
            ρ: the fraction of each lora_A and lora_B tensor kept at ``mask_step`` (top-|value|, per tensor).
            A tensor where ``floor(ρ·numel) = 0`` (e.g. the 1×8 ``lora_B`` of a one-output layer at ``r=8``)
            keeps its one largest entry instead of none; ``get_peft_model`` warns once, naming those tensors.
        mask_step (`int`, defaults to `100`):
            Optimizer steps of dense warm-up before the one-shot pruning.  Training must run more than
            ``mask_step`` optimizer steps to prune at all (the callback warns otherwise).
        cmr_lambda (`float`, defaults to `1e-3`):
            λ of ``L = L_task + λ·L_CMR``, applied from step 0.
        cmr_omega (`float`, defaults to `1.0`): ω in ``M = tanh(ω·|1/log(|W/‖W‖_F| + ε)|)``.
        cmr_eps (`float`, defaults to `1e-15`): ε of the same formula.
        cmr_target_modules (`list[str]`, defaults to `["q_proj", "k_proj", "v_proj"]`):
            Module-name suffixes whose frozen weight defines the CMR (the official choice).
        cmr_apply_scaling (`bool`, defaults to `False`):
            Multiply ``BA`` by ``α/r`` inside the CMR.  The official code does not (faithful default).
        cmr_cache (`bool`, defaults to `True`):
            Compute M once per layer (W is frozen) instead of every step as the official code does.
        remask_after_step (`bool`, defaults to `True`):
            Zero the pruned entries after every optimizer step (the official code re-zeroes before each
            forward, which leaves one step of drift in the saved adapter).
    """

    preserve_ratio: float = field(default=0.1, metadata={"help": "fraction of each LoRA factor kept"})
    mask_step: int = field(default=100, metadata={"help": "optimizer steps before pruning"})
    cmr_lambda: float = field(default=1e-3, metadata={"help": "weight of the CMR"})
    cmr_omega: float = field(default=1.0, metadata={"help": "omega of the CMR weights"})
    cmr_eps: float = field(default=1e-15, metadata={"help": "epsilon of the CMR weights"})
    cmr_target_modules: Optional[list[str]] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj"], metadata={"help": "CMR module-name suffixes"}
    )
    cmr_apply_scaling: bool = field(default=False, metadata={"help": "scale BA by alpha/r in the CMR"})
    cmr_cache: bool = field(default=True, metadata={"help": "cache the CMR weights M"})
    remask_after_step: bool = field(default=True, metadata={"help": "re-zero pruned entries after each step"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.LORASCULPT
        rho = _finite("preserve_ratio", self.preserve_ratio)
        if not 0.0 < rho <= 1.0:
            raise HFTrustConfigError(
                f"LoRASculptConfig.preserve_ratio must be in (0, 1] (the kept fraction of each LoRA factor; the "
                f"official value is 0.1), got {self.preserve_ratio}."
            )
        if isinstance(self.mask_step, bool) or int(self.mask_step) != self.mask_step or self.mask_step < 1:
            raise HFTrustConfigError(
                f"LoRASculptConfig.mask_step must be an integer ≥ 1 (optimizer steps before pruning), "
                f"got {self.mask_step!r}."
            )
        self.mask_step = int(self.mask_step)
        if _finite("cmr_lambda", self.cmr_lambda) < 0:
            raise HFTrustConfigError(
                f"LoRASculptConfig.cmr_lambda must be ≥ 0 (0 switches the CMR off), got {self.cmr_lambda}."
            )
        if _finite("cmr_omega", self.cmr_omega) <= 0:
            raise HFTrustConfigError(f"LoRASculptConfig.cmr_omega must be > 0 (official: 1.0), got {self.cmr_omega}.")
        if _finite("cmr_eps", self.cmr_eps) < 0:
            raise HFTrustConfigError(f"LoRASculptConfig.cmr_eps must be ≥ 0 (official: 1e-15), got {self.cmr_eps}.")
        if self.cmr_target_modules is not None:
            if isinstance(self.cmr_target_modules, str):
                # A bare string would be iterated character by character.
                self.cmr_target_modules = [self.cmr_target_modules]
            self.cmr_target_modules = list(self.cmr_target_modules)
