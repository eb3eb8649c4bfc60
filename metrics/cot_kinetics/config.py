"""The settings of CoT-Kinetics in one place: how the energy weighs its terms and how a trace is read.

evaluate-style: the metric takes a :class:`CotKineticsConfig` as ``config=`` (at ``evaluate.load`` or at
``compute``), and the config's field names are also accepted as keyword arguments there, each mapped onto
the field of the same name (``compute(..., gamma=0.5)`` equals ``compute(..., config=CotKineticsConfig(gamma=0.5))``).
A name that is not a field is refused with the list of fields, so a misspelt setting never passes silently.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from hf_trust.errors import HFTrustTypeError, KineticsError

from .kinetics import AGGREGATIONS, COE_TOKEN_SETS, ENERGY_TERMS, MASSES

#: Names users reach for that are not settings of this energy, with the setting that does the job.
_NOT_A_SETTING = {
    "alpha": "weigh momentum against curvature with gamma (energy = gamma·momentum + (1 − gamma)·curvature "
    "+ beta·potential) or give any term a weight with term_weights",
}


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise KineticsError(f"CotKineticsConfig.{name} must be a number, got {value!r}.")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise KineticsError(f"CotKineticsConfig.{name} must be a number, got {value!r}.") from None
    if not math.isfinite(x):
        raise KineticsError(f"CotKineticsConfig.{name} must be finite, got {value!r}; pass a real number.")
    return x


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise KineticsError(f"CotKineticsConfig.{name} must be one of {tuple(allowed)}, got {value!r}.")
    return value


def _positive_int(name: str, value: Any) -> int:
    try:
        n = operator.index(value)  # ints and numpy integers; 1.5 and "4" are refused
    except TypeError:
        n = None
    if isinstance(value, bool) or n is None or n < 1:
        raise KineticsError(f"CotKineticsConfig.{name} must be a positive integer, got {value!r}.")
    return n


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise KineticsError(f"CotKineticsConfig.{name} must be True or False, got {value!r}.")
    return value


@dataclass
class CotKineticsConfig:
    """Settings of the CoT-Kinetics metric (the energy and the reading of each trace).

    Energy per reasoning token: E_t = gamma·M_t + (1 − gamma)·C_t + beta·U_t (+ ``term_weights``), see
    ``kinetics.py`` for each term's definition.

    Args:
        gamma (`float`, defaults to 0.8):
            Weight of the momentum term M; curvature C gets ``1 - gamma``. In [0, 1]. 0.8 is the value a
            public re-implementation uses.
        beta (`float`, defaults to 0.0):
            Weight of the logit-lens potential U. ``0`` keeps the lens off (it costs one LM-head product per
            scored token per lens layer); any other value turns it on over ``lens_layers`` (all states when
            ``lens_layers`` is None).
        term_weights (`dict[str, float]`, defaults to `{}`):
            Overrides or adds weights by term name (``"momentum"``, ``"curvature"``, ``"potential"``,
            ``"kinetic"`` or a term registered with ``register_energy_term``). A term named here is computed and
            reported even at weight 0, so it can be read alone without changing the energy.
        normalize (`bool`, defaults to True):
            Divide each token's movement by its net displacement ‖h^L − h^0‖, which makes M and K invariant to
            the scale of the hidden states.
        mass (`str`, defaults to `"unit"`):
            The particle's mass m_t: ``"unit"`` (1) or ``"surprisal"`` (−log p of the emitted next token).
        aggregation (`str`, defaults to `"average"`):
            How one sample's value is read from its reasoning tokens: ``"average"``, ``"median"``, ``"max"`` or
            ``"last"``.
        lens_layers (`list[int]`, *optional*):
            States 0 … L the logit lens reads (negative indices count from the end, ``-1`` = L). Giving it turns
            the lens on; an index outside the model's states is an error when the model is known.
        think_start (`str`, defaults to `"<think>"`):
            Text that opens the reasoning, matched as a token-id subsequence after the prompt. ``""``: the
            reasoning starts with the output.
        think_end (`str`, defaults to `"</think>"`):
            Text that closes the reasoning (the answer follows). ``""`` or not found: the whole rest of the
            output is scored and ``segment_status`` says so.
        include_answer (`bool`, defaults to False):
            Also score the answer tokens. Off by default: by causality the energy of the reasoning then does not
            change when only the answer is edited.
        coe_token_set (`str`, defaults to `"paper"`):
            Tokens the CoE-R / CoE-C baselines average: ``"paper"`` (every output token, as the CoE paper
            defines) or ``"authors_code"`` (the first prompt token and every generated token but the last, as the
            CoE authors' released code reads ``generate``'s states).
        batch_size (`int`, defaults to 4):
            Samples per forward pass (left padding inside a batch). At least 1.
    """

    gamma: float = 0.8
    beta: float = 0.0
    term_weights: dict[str, float] = field(default_factory=dict)
    normalize: bool = True
    mass: str = "unit"
    aggregation: str = "average"
    lens_layers: Optional[list[int]] = None
    think_start: str = "<think>"
    think_end: str = "</think>"
    include_answer: bool = False
    coe_token_set: str = "paper"
    batch_size: int = 4

    def __post_init__(self) -> None:
        self.gamma = _number("gamma", self.gamma)
        if not 0.0 <= self.gamma <= 1.0:
            raise KineticsError(
                f"CotKineticsConfig.gamma must lie in [0, 1] (momentum weight; curvature gets 1 − gamma), "
                f"got {self.gamma}."
            )
        self.beta = _number("beta", self.beta)
        self.term_weights = self._checked_term_weights(self.term_weights)
        self.normalize = _flag("normalize", self.normalize)
        self.include_answer = _flag("include_answer", self.include_answer)
        self.mass = _choice("mass", self.mass, MASSES)
        self.aggregation = _choice("aggregation", self.aggregation, AGGREGATIONS)
        self.coe_token_set = _choice("coe_token_set", self.coe_token_set, COE_TOKEN_SETS)
        for name in ("think_start", "think_end"):
            if not isinstance(getattr(self, name), str):
                raise KineticsError(
                    f'CotKineticsConfig.{name} must be a string ("" for none), got {getattr(self, name)!r}.'
                )
        self.lens_layers = self._checked_lens_layers(self.lens_layers)
        self.batch_size = _positive_int("batch_size", self.batch_size)

    @staticmethod
    def _checked_term_weights(term_weights: Any) -> dict[str, float]:
        if not isinstance(term_weights, Mapping):
            raise KineticsError(
                f"CotKineticsConfig.term_weights must be a dict of term name -> weight, got {term_weights!r}."
            )
        out = {}
        for k, v in term_weights.items():
            if k not in ENERGY_TERMS:
                raise KineticsError(
                    f"CotKineticsConfig.term_weights names an unknown term {k!r}; known terms: {sorted(ENERGY_TERMS)}."
                )
            out[k] = _number(f"term_weights[{k!r}]", v)
        return out

    def _checked_lens_layers(self, lens_layers: Any) -> Optional[list[int]]:
        if lens_layers is None:
            return None
        if isinstance(lens_layers, (int, str)) or not isinstance(lens_layers, Sequence):
            raise KineticsError(f"CotKineticsConfig.lens_layers must be a list of layer indices, got {lens_layers!r}.")
        for ix in lens_layers:
            if isinstance(ix, bool) or not isinstance(ix, int):
                raise KineticsError(f"CotKineticsConfig.lens_layers must hold integers, got {ix!r}.")
        if len(lens_layers) == 0 and self.beta != 0.0:
            raise KineticsError(
                "CotKineticsConfig.lens_layers is empty while beta != 0; give at least one layer or set beta=0."
            )
        return list(lens_layers)

    def weights(self) -> dict[str, float]:
        """The weight of every term: E = gamma·momentum + (1 − gamma)·curvature + beta·potential, then ``term_weights``."""
        w = {"momentum": self.gamma, "curvature": 1.0 - self.gamma, "potential": self.beta}
        w.update(self.term_weights)
        return w

    def replace(self, **changes: Any) -> CotKineticsConfig:
        """A copy with ``changes`` applied (checked like the constructor's arguments)."""
        return from_settings(self, changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CotKineticsConfig))


def from_settings(config: Any = None, settings: Optional[Mapping[str, Any]] = None) -> CotKineticsConfig:
    """``config`` (a :class:`CotKineticsConfig`, a dict of its fields or None) with ``settings`` applied on top.

    Every key of ``settings`` must be a field of :class:`CotKineticsConfig`; anything else is refused with
    the list of fields (and, for names users reach for, the setting that does the job).
    """
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, CotKineticsConfig):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise HFTrustTypeError(
            f"config must be a CotKineticsConfig (or a dict of its fields), got {type(config).__name__}."
        )
    merged = {**base, **dict(settings or {})}
    unknown = [k for k in merged if k not in FIELDS]
    if unknown:
        k = unknown[0]
        hint = _NOT_A_SETTING.get(k, "check the spelling")
        raise KineticsError(
            f"{k}={merged[k]!r} is not a CoT-Kinetics setting: {hint}. The settings are the fields of "
            f"CotKineticsConfig: {', '.join(FIELDS)}."
        )
    return CotKineticsConfig(**merged)


__all__ = ["FIELDS", "CotKineticsConfig", "from_settings"]
