"""``BYESelectConfig``: every setting of BYE's unsupervised selection, in one place.

The selection (:func:`hf_trust.filters.bye_select`) turns an (N, L) attention-entropy matrix into the rows to
remove.  Its settings are held by one frozen dataclass that :class:`~hf_trust.filters.BYEFilter`,
:func:`~hf_trust.filters.bye_select`, the :class:`~hf_trust.filters.BYEReport` (``report.params`` /
``report.select_config``) and the demo recipes share, so a setting is named, checked and documented once::

    from hf_trust.filters import BYEFilter, BYESelectConfig

    cfg = BYESelectConfig(layer_select="robust")
    clean_ds, report = BYEFilter(model, processor, select_config=cfg)(ds)
    assert BYESelectConfig.from_dict(cfg.to_dict()) == cfg   # JSON round trip (report.params holds to_dict())

What is *not* a setting.  The reference fixes three choices and so does BYE here: the query position is the
last prompt token (the one predicting the first answer token), the attention is averaged over all heads, and
the suspicious side is the *low*-entropy one (attention collapse lowers entropy).  They are not parameters.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from hf_trust.errors import HFTrustConfigError, HFTrustTypeError
from hf_trust.fingerprint import config_fingerprint

#: Default cap on the share of rows BYE may remove (every mode).  BYE's premise is that poison is a minority
#: of a fine-tuning set; a rule that flags more than half of it has split clean structure, so at most half is
#: removed and the report says ``capped``.  ``None`` disables the cap (then ``majority_flagged`` + warning).
DEFAULT_MAX_REMOVAL_FRACTION = 0.5
#: Fewest rows BYE removes anything from (every mode).  Its 2-GMMs need rows to tell two modes from noise:
#: on pure Gaussian noise (N rows × 6 layers, no poison, 10 seeds) the default rule removed rows with status
#: "ok" in 10/10 seeds at N = 2 and 5, 6/10 at N = 20 (15-40 % of the rows), 1/10 at N = 30 and 40, and in
#: none from N = 50 up.  Below it the report says ``too_few_rows`` and nothing is removed; ``min_rows=1`` lifts it.
DEFAULT_MIN_ROWS = 50

#: Keywords that were parameters of ``BYEFilter`` / ``bye_select`` and only ever accepted one value.
FIXED_CHOICES = {
    "direction": "the suspicious side is always the low-entropy one (attention collapse lowers entropy)",
    "head_reduce": "the attention is always averaged over all heads, as in the reference",
    "query": "the query is always the last prompt token (the one predicting the first answer token)",
}

LayerSelect = Union[str, Sequence[int]]


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise HFTrustConfigError(
            f"{name} must be a finite number > 0, got {value!r}; the reference uses {name}=2.0 (a negative or "
            "zero threshold calls every layer bimodal)."
        )


def _check_fraction(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < float(value) <= 1):
        raise HFTrustConfigError(
            f"{name} must be a share in (0, 1]{' or None' if allow_none else ''}, got {value!r}; "
            f"e.g. {name}=0.5 (the share of rows, not a count)."
        )


def _normalise_layer_select(value: Any) -> LayerSelect:
    """A rule name as given, or a list of layer indices as a tuple of ints (hashable, JSON-able)."""
    if isinstance(value, str):
        if value in ("bimodal", "bsi", "robust"):
            return value
        if value.startswith("top_kl:"):
            k = value.split(":", 1)[1]
            if k.isdigit() and int(k) >= 1:
                return value
        raise HFTrustConfigError(
            f"layer_select must be 'bimodal', 'bsi', 'robust', 'top_kl:<k>' (k ≥ 1) or a list of layer indices, "
            f"got {value!r}."
        )
    try:
        layers = tuple(int(x) for x in value if not isinstance(x, bool) and float(x) == int(x))
    except (TypeError, ValueError) as exc:
        raise HFTrustConfigError(
            f"layer_select must be a rule name or a list of layer indices, got {value!r}."
        ) from exc
    if len(layers) != len(value):
        raise HFTrustConfigError(f"layer_select must list integer layer indices, got {value!r}.")
    if not layers:
        raise HFTrustConfigError("layer_select is an empty list; pass at least one layer index or a rule name.")
    if any(l < 0 for l in layers):
        raise HFTrustConfigError(f"layer_select {list(layers)} holds a negative index; layers count from 0.")
    return tuple(sorted(set(layers)))


@dataclass(frozen=True)
class BYESelectConfig:
    """The settings of BYE's selection (which layers are sensitive, which rows are removed).

    Defaults are the released code's rule plus two guard rails (``max_removal_fraction``, ``min_rows``).  Every
    field is checked on construction: an impossible value raises ``HFTrustConfigError`` naming the field and
    the fix.  Frozen, so a config can key a cache (:meth:`fingerprint`); derive variants with :meth:`replace`.

    Attributes:
        layer_select: how layers are chosen: ``"bimodal"`` (the released code: |μ₁−μ₂| > ``k_sigma``·(σ₁+σ₂)),
            ``"bsi"`` (bimodal separation index, Ashman's D, ≥ ``bsi_threshold``: our reconstruction, not
            in the released code and looser than its rule), ``"robust"`` (see
            :func:`hf_trust.filters.select.robust_select`; opt-in, ``benchmarks/results/bye.md`` says when it
            beats the reference), ``"top_kl:<k>"`` (the k layers with the largest KL diagnostic) or a list of
            layer indices (kept sorted, as a tuple).
        k_sigma: the released code's threshold in |μ₁−μ₂| > k_σ(σ₁+σ₂) (``"bimodal"``; reference 2.0).
        bsi_threshold: separation a layer needs under ``"bsi"`` and ``"robust"`` (2.0).
        max_minority: ``"robust"`` only: largest share of the rows a layer's low mode may hold and still be an
            attack (0.4; poison is a minority of a fine-tuning set).
        agreement: ``"robust"`` only: Jaccard overlap of two layers' flagged rows that counts as agreement (0.5).
        min_support: ``"robust"`` only: agreeing layers a group needs to rank before smaller groups (``None``:
            ``max(1, round(L / 10))``).
        require_minor_low_component: the non-robust modes drop selected layers whose low component weighs
            ≥ 0.5 (opt-in safeguard).
        max_removal_fraction: at most this share of rows is removed, the lowest scores first (status
            ``"capped"``, with a warning); ``None`` disables the cap (then flagging more than half the rows
            gives status ``"majority_flagged"`` and a warning).  Default 0.5, every mode.
        warn_if_removal_concentrated: warn when at least this share of one label's rows is removed (``None``:
            never).
        min_rows: with fewer rows nothing is removed (status ``"too_few_rows"``, with a warning).  Default 50,
            below which the mixture fits split pure noise; ``min_rows=1`` lifts it, e.g. for toy data.
    """

    layer_select: LayerSelect = "bimodal"
    k_sigma: float = 2.0
    bsi_threshold: float = 2.0
    max_minority: float = 0.4
    agreement: float = 0.5
    min_support: Optional[int] = None
    require_minor_low_component: bool = False
    max_removal_fraction: Optional[float] = DEFAULT_MAX_REMOVAL_FRACTION
    warn_if_removal_concentrated: Optional[float] = None
    min_rows: int = DEFAULT_MIN_ROWS

    def __post_init__(self) -> None:
        _check_positive("k_sigma", self.k_sigma)
        _check_positive("bsi_threshold", self.bsi_threshold)
        _check_fraction("max_removal_fraction", self.max_removal_fraction)
        _check_fraction("warn_if_removal_concentrated", self.warn_if_removal_concentrated)
        _check_fraction("agreement", self.agreement, allow_none=False)
        mm = self.max_minority
        if isinstance(mm, bool) or not isinstance(mm, (int, float)) or not (0 < mm < 1):
            raise HFTrustConfigError(f"max_minority must be a share in (0, 1), got {mm!r}; default 0.4.")
        ms = self.min_support
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, numbers.Integral) or ms < 1):
            raise HFTrustConfigError(
                f"min_support must be an integer ≥ 1 or None (automatic: max(1, round(L / 10)) agreeing layers), "
                f"got {ms!r}."
            )
        mr = self.min_rows
        if isinstance(mr, bool) or not isinstance(mr, numbers.Integral) or mr < 1:
            raise HFTrustConfigError(
                f"min_rows must be an integer ≥ 1, got {mr!r}; the default {DEFAULT_MIN_ROWS} keeps BYE from "
                "removing rows of datasets too small for its mixture fits (min_rows=1 lifts the guard)."
            )
        if not isinstance(self.require_minor_low_component, bool):
            raise HFTrustConfigError(
                f"require_minor_low_component must be True or False, got {self.require_minor_low_component!r}."
            )
        object.__setattr__(self, "min_rows", int(mr))
        object.__setattr__(self, "min_support", None if ms is None else int(ms))
        object.__setattr__(self, "layer_select", _normalise_layer_select(self.layer_select))

    # -- serialisation (the report stores to_dict(); from_dict reads it back)
    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (a layer list becomes a list)."""
        out = dataclasses.asdict(self)
        if isinstance(self.layer_select, tuple):
            out["layer_select"] = list(self.layer_select)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BYESelectConfig:
        """The config :meth:`to_dict` wrote (e.g. a saved report's ``params``); an unknown key is an error.

        Reports written before this class existed also hold ``"direction": "low"``, the one value it ever
        took; that key is accepted and dropped.
        """
        if not isinstance(data, Mapping):
            raise HFTrustTypeError(f"BYESelectConfig.from_dict takes a mapping, not {type(data).__name__}.")
        data = dict(data)
        if data.get("direction", "low") != "low":
            raise HFTrustConfigError(f"direction={data['direction']!r}: {FIXED_CHOICES['direction']}.")
        data.pop("direction", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise HFTrustConfigError(
                f"{unknown} are not BYESelectConfig fields (fields: {sorted(names)}); was this dict written by "
                "BYESelectConfig.to_dict()?"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> BYESelectConfig:
        """A copy with ``changes`` applied (and checked), e.g. ``cfg.replace(layer_select="robust")``."""
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """SHA-256 of every field: part of any cache key for results the selection determines."""
        return config_fingerprint(self)


def reject_legacy_keywords(where: str, keywords: Mapping[str, Any]) -> None:
    """Raise a clear error for selection settings passed as loose keywords (the interface before
    :class:`BYESelectConfig`), for the three fixed choices and for anything else unexpected."""
    if not keywords:
        return
    fields = {f.name for f in dataclasses.fields(BYESelectConfig)}
    fixed = sorted(k for k in keywords if k in FIXED_CHOICES)
    if fixed:
        raise HFTrustConfigError(
            f"{where} takes no {', '.join(fixed)} argument: "
            + "; ".join(FIXED_CHOICES[k] for k in fixed)
            + ". Remove the argument."
        )
    moved = sorted(k for k in keywords if k in fields)
    if moved:
        example = ", ".join(f"{k}={keywords[k]!r}" for k in moved)
        arg = "select_config" if where.startswith("BYEFilter") else "config"
        raise HFTrustConfigError(
            f"{where} takes the selection settings as one BYESelectConfig: pass "
            f"{arg}=BYESelectConfig({example}) instead of the keyword(s) {moved}."
        )
    raise HFTrustTypeError(f"{where} got unexpected keyword argument(s) {sorted(keywords)}.")


__all__ = ["BYESelectConfig", "DEFAULT_MAX_REMOVAL_FRACTION", "DEFAULT_MIN_ROWS", "FIXED_CHOICES"]
