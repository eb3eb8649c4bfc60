"""BYE's unsupervised selection on an (N, L) attention-entropy matrix: which layers, which rows.

Four layer rules (``layer_select``):

* ``"bimodal"`` (default, the released code): a layer is sensitive iff its 2-GMM has |μ₁−μ₂| > k_σ(σ₁+σ₂);
  the score is the mean entropy over sensitive layers and a second 2-GMM on it flags its low component.
* ``"bsi"`` (a separation-index rule, our reconstruction; looser than the released code's rule): keep a layer
  iff its bimodal separation index is ≥ ``bsi_threshold`` (2.0); then as above.  The released code has no such
  rule and the paper's text was not retrievable (spec), so the index is our choice: Ashman's D,
  BSI = √2·|μ₁−μ₂| / √(σ₁²+σ₂²), the standard two-Gaussian separation statistic whose conventional threshold
  for "clean separation" is 2.  (The released code's rule, |μ₁−μ₂| > 2(σ₁+σ₂), needs |μ₁−μ₂| > 4σ at equal σ
  where D ≥ 2 needs only 2σ, so this rule is about 2× looser.)
* ``"top_kl:<k>"``: the k layers with the largest KL(N_low‖N_high) diagnostic; then as above.
* ``"robust"``: see :func:`robust_select`; it is built on what an attack must look like rather than on "any
  bimodal layer".

An explicit list of layer indices is also accepted.  Every setting is a field of
:class:`~hf_trust.filters.config.BYESelectConfig`.  Guard rails hold in every mode: non-finite entries are
imputed and reported, the removed share per class is in the report, and a removal of more than
``max_removal_fraction`` (default 0.5) of the rows is capped, with ``status="capped"`` and a warning; with the
cap disabled, flagging more than half the rows sets ``status="majority_flagged"`` and warns.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustTypeError

from .config import BYESelectConfig, reject_legacy_keywords
from .gmm import GMM1D, fit_gmm_1d, gaussian_kl
from .report import BYEReport

STATUSES = ("ok", "no_sensitive_layers", "majority_flagged", "capped", "too_few_rows")


# ------------------------------------------------------------------ small statistics
def bimodal_separation_index(g: GMM1D) -> float:
    """Ashman's D of a fitted 2-GMM: √2·|μ₁−μ₂| / √(σ₁²+σ₂²) (scale- and shift-free)."""
    mu, sd = g.means, g.stds
    return float(math.sqrt(2.0) * abs(mu[1] - mu[0]) / math.sqrt(sd[0] ** 2 + sd[1] ** 2))


def _auroc(score: np.ndarray, y: np.ndarray) -> float:
    """AUROC of ``score`` for positives ``y`` (rank statistic, ties averaged)."""
    pos, neg = score[y], score[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    order = np.argsort(allv, kind="mergesort")
    r = np.empty(len(allv))
    r[order] = np.arange(1, len(allv) + 1, dtype=float)
    ranks = (np.bincount(inv, weights=r) / counts)[inv]  # average ranks of ties
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def layer_auroc(E: np.ndarray, is_poison: Sequence[bool]) -> list[float]:
    """Per layer, the AUROC of −entropy for known poison labels (evaluation only; never used for a decision)."""
    E = np.asarray(E, dtype=np.float64)
    y = np.asarray(is_poison, dtype=bool)
    return [_auroc(-E[:, l], y) for l in range(E.shape[1])]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 0.0


# ------------------------------------------------------------------ the robust rule
def lowest_separated_mode(
    x: np.ndarray, bsi_threshold: float, min_rows: int, max_depth: int = 3
) -> tuple[Optional[np.ndarray], float, int]:
    """The rows of the lowest well-separated mode of ``x``: ``(mask or None, separation, depth)``.

    A 2-GMM is fitted; if its components are separated (BSI ≥ ``bsi_threshold``) the low component is split
    again, as long as each split is itself separated and leaves ≥ ``min_rows`` rows (at most ``max_depth``
    levels).  Clean entropies are often multi-modal (one mode per image type or answer class), so the low
    component of a single 2-GMM can mix a collapsed minority with a clean mode that merely sits lower.  Of the
    levels visited, the one with the most separated split is returned.
    """
    idx = np.arange(len(x))
    g = fit_gmm_1d(x)
    sep = bimodal_separation_index(g)
    low = g.predict(x) == 0
    if sep < bsi_threshold or low.sum() < min_rows:
        return None, sep, 0
    path = [(idx[low], sep)]  # (rows of the low mode, separation of the split that produced it)
    while len(path) < max_depth and len(path[-1][0]) >= 2 * min_rows:
        cur = path[-1][0]
        g2 = fit_gmm_1d(x[cur])
        sub = g2.predict(x[cur]) == 0
        sep2 = bimodal_separation_index(g2)
        if sep2 < bsi_threshold or sub.sum() < min_rows or sub.all():
            break
        path.append((cur[sub], sep2))
    # the level whose split is the most distinct: a collapsed minority is separated from everything above it
    # more sharply than any clean mode is from its neighbours, and a spread-out poisoned mode is not split again
    depth = int(np.argmax([p[1] for p in path]))
    mask = np.zeros(len(x), dtype=bool)
    mask[path[depth][0]] = True
    return mask, path[depth][1], depth + 1


def default_min_support(num_layers: int) -> int:
    """Agreeing layers a group needs before it outranks smaller groups: ``max(1, round(L / 10))``."""
    return max(1, int(round(num_layers / 10)))


def _agreement_groups(modes: dict[int, np.ndarray], agreement: float) -> list[list[int]]:
    """Connected components of the graph linking two layers whose flagged rows overlap (Jaccard ≥ ``agreement``)."""
    cands = sorted(modes)
    groups: list[list[int]] = []
    seen: set[int] = set()
    for c in cands:
        if c in seen:
            continue
        stack, comp = [c], []
        seen.add(c)
        while stack:
            a = stack.pop()
            comp.append(a)
            for b in cands:
                if b not in seen and _jaccard(modes[a], modes[b]) >= agreement:
                    seen.add(b)
                    stack.append(b)
        groups.append(sorted(comp))
    return groups


def robust_select(
    E: np.ndarray, *, bsi_threshold: float, max_minority: float, agreement: float, min_support: Optional[int] = None
) -> tuple[list[int], np.ndarray, dict]:
    """The ``"robust"`` layer and row choice.  Returns ``(layers, flagged, diagnostics)``.

    Why this rule.  A backdoor's trigger makes the text query attend to a few trigger patches, so in some layers
    the *poisoned* rows have a much lower image-attention entropy than clean rows.  Three facts follow, and
    the reference rule uses none of them:

    1. **The suspicious rows form the lowest, minority mode.**  An attacker poisons a small share of a
       fine-tuning set.  Per layer we take the lowest mode that is cleanly separated from the rest
       (:func:`lowest_separated_mode`, which also looks inside the low component of a 2-GMM, because clean
       entropies are often multi-modal); a layer whose lowest mode holds more than ``max_minority`` of the rows
       shows clean structure (image types, prompt templates, answer classes) and is never a candidate.
    2. **Separation is judged scale-free.**  Layers differ in entropy range and spread, so a split counts only
       if its bimodal separation index (Ashman's D) is ≥ ``bsi_threshold``; raw entropies of different layers
       are never compared or averaged.
    3. **The same rows collapse together.**  The trigger is one feature of the poisoned rows, so the layers
       that see it flag (nearly) the same rows, while clean structure in one layer need not agree with another.
       Candidates are grouped by the agreement (Jaccard index ≥ ``agreement``) of their flagged rows.
    4. **Support grows with depth.**  In a deep decoder some layer will show a small, separated low mode by
       chance (clean entropies are multi-modal, and there are many layers to look at), while a trigger's collapse
       shows in a band of layers.  Groups with at least ``min_support`` layers therefore rank before smaller
       ones; the default ``max(1, round(L / 10))`` is 1 for a 4-layer model and 3 for a 30-layer one, so the
       number of layers that must agree grows with the number of layers that could agree by chance.  (On the
       SmolLM2-decoder recipe, seed 0, a lone layer with a 4 % clean low mode outranked the three layers that
       agreed on the poison; ``benchmarks/results/bye.md``.)

    Of the groups with enough support (all groups when none has), the one whose low mode is the smallest share
    of the data wins (ties: more layers), following fact 1: a clean mode (an answer class, an image type) is
    typically a larger block than a poisoned subset.

    Rows are flagged by a per-layer decision (membership of that layer's separated low mode, i.e. a maximum
    posterior under that layer's own fitted mixture) combined by majority over the chosen layers, instead of a
    second mixture on averaged raw entropies of unrelated layers.
    """
    n, L = E.shape
    support = default_min_support(L) if min_support is None else int(min_support)
    min_rows = max(3, int(math.ceil(0.005 * n)))
    modes: dict[int, np.ndarray] = {}
    seps: dict[int, float] = {}
    for l in range(L):
        mask, sep, _ = lowest_separated_mode(E[:, l], bsi_threshold, min_rows)
        if mask is not None and mask.mean() <= max_minority:
            modes[l], seps[l] = mask, sep
    cands = sorted(modes)
    diag: dict = {
        "candidates": cands,
        "groups": [],
        "separation": {str(l): seps[l] for l in cands},
        "min_support": support,
    }
    if not cands:
        return [], np.zeros(n, dtype=bool), diag
    groups = _agreement_groups(modes, agreement)
    # groups with enough agreeing layers first, then the most minority-like (an attack is a small share of the
    # data), then the larger group
    groups.sort(key=lambda g: (len(g) < support, float(np.mean([modes[l].mean() for l in g])), -len(g)))
    diag["groups"] = groups
    chosen = groups[0]
    votes = np.stack([modes[l] for l in chosen], axis=1).mean(axis=1)
    flagged = votes > 0.5
    # score: lower = more suspicious; the share of chosen layers voting "collapsed", then the mean entropy rank
    ranks = np.stack([np.argsort(np.argsort(E[:, l], kind="stable"), kind="stable") for l in chosen], axis=1)
    diag["score"] = -votes + ranks.mean(axis=1) / (n * 10.0)
    return chosen, flagged, diag


# ------------------------------------------------------------------ the entry point
def _impute_nonfinite(E: np.ndarray, report: BYEReport) -> np.ndarray:
    """Replace NaN/±inf by the column mean of the finite entries (the reference does this for NaN) and report it.

    A single ``inf`` would otherwise make a layer's mixture variance infinite and hide a real collapse layer.
    """
    bad = ~np.isfinite(E)
    if not bad.any():
        return E
    finite_cols = np.where(bad.all(axis=0))[0]
    if len(finite_cols):
        raise HFTrustDataError(
            f"every entropy of layer(s) {finite_cols.tolist()} is NaN or infinite; BYE cannot profile them. "
            "Check that those layers attend to image tokens, or drop them with BYEFilter(layers=[...])."
        )
    col_mean = np.nanmean(np.where(bad, np.nan, E), axis=0)
    rows = np.where(bad.any(axis=1))[0]
    report.nonfinite_rows = rows.tolist()
    msg = (
        f"{len(rows)} row(s) have NaN or infinite attention entropies (first: {rows[:5].tolist()}); those entries "
        "were replaced by their layer's mean before fitting. Inspect these rows: an entropy outside "
        "[0, ln N_v] means the attention capture failed for them."
    )
    report.warnings.append(msg)
    warnings.warn(msg, stacklevel=3)
    return np.where(bad, col_mean[None, :], E)


def bye_select(
    entropies: np.ndarray | Sequence[Sequence[float]],
    config: Optional[BYESelectConfig] = None,
    *,
    labels: Optional[Sequence[Any]] = None,
    is_poison: Optional[Sequence[bool]] = None,
    **legacy: Any,
) -> tuple[BYEReport, np.ndarray]:
    """BYE's unsupervised selection on an (N, L) entropy matrix.  Returns ``(report, scores)``.

    Args:
        entropies: (N, L) attention entropies (rows = samples, columns = decoder layers).
        config: the selection settings (:class:`BYESelectConfig`; ``None`` = the released code's rule with the
            default guard rails).  ``report.params`` holds ``config.to_dict()``.
        labels: per-row answer/label, for the removal histogram and the removed share per class.
        is_poison: ground truth, only for the report's per-layer AUROC (never used for the decision).

    Scores: the reference modes return the mean entropy over the selected layers (lower = more suspicious);
    ``"robust"`` returns minus the share of chosen layers voting "collapsed" (ties broken by the mean entropy
    rank; also lower = more suspicious).  NaN when nothing was selected.

    Selection settings given as loose keywords (``bye_select(E, layer_select="robust")``, the interface before
    :class:`BYESelectConfig`) raise an ``HFTrustConfigError`` that shows the config to pass instead.
    """
    reject_legacy_keywords("bye_select()", legacy)
    config = _resolve_config(config)
    E = _as_entropy_matrix(entropies)
    n, L = E.shape
    _check_lengths(n, labels=labels, is_poison=is_poison)
    report = BYEReport(status="ok", num_samples=n, num_layers=L, params=config.to_dict())
    E = _impute_nonfinite(E, report)
    if labels is not None:
        report.label_histogram = {str(k): v for k, v in Counter(map(str, labels)).items()}
    if n < 2:
        return _finish(report, np.zeros(n, dtype=bool), np.full(n, np.nan), labels, config)
    gmms = _profile_layers(E, config, report)
    if is_poison is not None:
        report.layer_auroc = layer_auroc(E, is_poison)
    if config.layer_select == "robust":
        flagged, scores = _robust_rows(E, config, report)
    else:
        flagged, scores = _mixture_rows(E, gmms, config, report)
    return _finish(report, flagged, scores, labels, config)


# ------------------------------------------------------------------ the steps of bye_select
def _resolve_config(config: Any) -> BYESelectConfig:
    if config is None:
        return BYESelectConfig()
    if not isinstance(config, BYESelectConfig):
        raise HFTrustTypeError(
            f"config must be a BYESelectConfig or None, got {type(config).__name__}; build one with "
            "BYESelectConfig(layer_select=...) or, from a saved dict, BYESelectConfig.from_dict(d)."
        )
    return config


def _as_entropy_matrix(entropies: Any) -> np.ndarray:
    """The entropies as an (N, L) float64 array with N, L ≥ 1 (``HFTrustDataError`` otherwise)."""
    try:
        E = np.asarray(entropies, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise HFTrustDataError(
            f"entropies must be an (N, L) matrix of numbers (attention entropies, e.g. BYEFilter.entropies(ds)"
            f"['bye_layer_entropy']); converting it to floats failed: {exc}. Pass numeric entropies, not strings "
            "or ragged rows."
        ) from exc
    if E.ndim != 2 or E.shape[0] == 0 or E.shape[1] == 0:
        raise HFTrustDataError(
            f"BYE needs an (N, L) entropy matrix with N ≥ 1 rows and L ≥ 1 layers, got shape {E.shape}; "
            "is the dataset empty?"
        )
    return E


def _check_lengths(n: int, **per_row: Optional[Sequence[Any]]) -> None:
    for name, values in per_row.items():
        if values is not None and len(values) != n:
            raise HFTrustDataError(f"{name} has {len(values)} entries for {n} rows; pass one entry per row.")


def _profile_layers(E: np.ndarray, config: BYESelectConfig, report: BYEReport) -> list[GMM1D]:
    """Per layer: a 2-GMM, the released code's bimodality test, the KL diagnostic and the separation index."""
    gmms = [fit_gmm_1d(E[:, l]) for l in range(E.shape[1])]
    for g in gmms:
        mu, sd = g.means, g.stds
        report.layer_gmms.append(g.to_dict())
        report.layer_bimodal.append(bool(abs(mu[1] - mu[0]) > config.k_sigma * (sd[0] + sd[1])))
        report.layer_kl.append(gaussian_kl(mu[0], sd[0], mu[1], sd[1]))
        report.layer_bsi.append(bimodal_separation_index(g))
    return gmms


def _robust_rows(E: np.ndarray, config: BYESelectConfig, report: BYEReport) -> tuple[np.ndarray, np.ndarray]:
    """``layer_select="robust"``: :func:`robust_select`'s layers, flags and scores."""
    chosen, flagged, diag = robust_select(
        E,
        bsi_threshold=config.bsi_threshold,
        max_minority=config.max_minority,
        agreement=config.agreement,
        min_support=config.min_support,
    )
    report.sensitive_layers = chosen
    report.robust = {k: diag[k] for k in ("candidates", "groups", "separation", "min_support")}
    if not chosen:
        return np.zeros(len(E), dtype=bool), np.full(len(E), np.nan)
    return flagged, np.asarray(diag["score"])


def _chosen_layers(gmms: list[GMM1D], config: BYESelectConfig, report: BYEReport) -> list[int]:
    """The layers of a mixture mode (``bimodal``, ``bsi``, ``top_kl:<k>`` or an explicit list)."""
    rule, L = config.layer_select, len(gmms)
    if rule == "bimodal":
        chosen = [l for l, b in enumerate(report.layer_bimodal) if b]
    elif rule == "bsi":
        chosen = [l for l, b in enumerate(report.layer_bsi) if b >= config.bsi_threshold]
    elif isinstance(rule, str):  # top_kl:<k>
        k = int(rule.split(":", 1)[1])
        chosen = sorted(np.argsort(-np.nan_to_num(np.asarray(report.layer_kl), nan=-np.inf))[:k].tolist())
    else:
        chosen = list(rule)
        if any(l >= L for l in chosen):
            raise HFTrustConfigError(
                f"layer_select {chosen} is outside the {L} profiled layers (valid: 0..{L - 1}); fix the indices."
            )
    if config.require_minor_low_component:
        chosen = [l for l in chosen if gmms[l].weights[0] < 0.5]
    return chosen


def _mixture_rows(
    E: np.ndarray, gmms: list[GMM1D], config: BYESelectConfig, report: BYEReport
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's second stage: mean entropy over the chosen layers, a 2-GMM on it, its low component."""
    chosen = _chosen_layers(gmms, config, report)
    report.sensitive_layers = chosen
    if not chosen:
        return np.zeros(len(E), dtype=bool), np.full(len(E), np.nan)
    scores = E[:, chosen].mean(axis=1)
    sg = fit_gmm_1d(scores)
    report.score_gmm = sg.to_dict()
    return sg.predict(scores) == 0, scores  # low-mean component = collapsed attention = suspicious


# ------------------------------------------------------------------ guard rails shared by every mode
def _warn(report: BYEReport, msg: str) -> None:
    """Record ``msg`` in the report and warn at the caller of :func:`bye_select` (bye_select → _finish → here)."""
    report.warnings.append(msg)
    warnings.warn(msg, stacklevel=5)


def _finish(
    report: BYEReport,
    flagged: np.ndarray,
    scores: np.ndarray,
    labels: Optional[Sequence[Any]],
    config: BYESelectConfig,
) -> tuple[BYEReport, np.ndarray]:
    """Guard rails shared by every mode (too few rows, cap, status), then the removed share per class."""
    flagged = _guard_rails(report, np.asarray(flagged, dtype=bool).copy(), scores, config)
    report.suspicious = flagged.tolist()
    report.removed_fraction = float(flagged.mean()) if len(flagged) else 0.0
    if labels is not None:
        _removal_by_class(report, flagged, labels, config.warn_if_removal_concentrated)
    return report, scores


def _guard_rails(report: BYEReport, flagged: np.ndarray, scores: np.ndarray, config: BYESelectConfig) -> np.ndarray:
    """Set ``report.status`` and return the rows actually removed (none below ``min_rows``, capped above
    ``max_removal_fraction``)."""
    n, cap_share = len(flagged), config.max_removal_fraction
    if n < config.min_rows:
        # checked first: on so few rows any other status (even "no_sensitive_layers") is as unreliable
        report.status = "too_few_rows"
        _warn(
            report,
            f"BYE got {n} rows, fewer than min_rows={config.min_rows}: its mixture fits cannot tell a poisoned "
            f"minority from noise on so few rows (the rule would have flagged {int(flagged.sum())}), so nothing "
            "was removed (status 'too_few_rows'). Profile more rows, or pass min_rows=1 to remove what the rule "
            "flags anyway.",
        )
        return np.zeros(n, dtype=bool)
    if not report.sensitive_layers:
        report.status = "no_sensitive_layers"
        return flagged
    if cap_share is not None and flagged.sum() > cap_share * n:
        cap = int(math.floor(cap_share * n))
        order = np.argsort(np.where(flagged, scores, np.inf), kind="stable")[:cap]  # lowest-scoring flagged rows
        report.status = "capped"
        _warn(
            report,
            f"BYE flagged {int(flagged.sum())}/{n} rows ({flagged.mean():.0%}), more than max_removal_fraction="
            f"{cap_share}; only the {cap} lowest-scoring were removed (status 'capped'). A rule that flags this "
            "much has most likely split clean structure, not found a poisoned minority: inspect "
            "report.removed_share_per_class, or try layer_select='robust'.",
        )
        capped = np.zeros(n, dtype=bool)
        capped[order] = True
        return capped
    if flagged.sum() > 0.5 * n:
        report.status = "majority_flagged"
        _warn(
            report,
            f"BYE flagged {int(flagged.sum())}/{n} rows ({flagged.mean():.0%}), a majority of the dataset "
            "(status 'majority_flagged', max_removal_fraction=None). Poison is a minority of a fine-tuning set; "
            "this removal most likely follows clean structure.",
        )
        return flagged
    report.status = "ok"
    return flagged


def _removal_by_class(
    report: BYEReport, flagged: np.ndarray, labels: Sequence[Any], warn_share: Optional[float]
) -> None:
    """The removal histogram and removed share per label; a warning per label removed beyond ``warn_share``."""
    lab = np.asarray(list(map(str, labels)))
    report.removal_histogram = {str(k): v for k, v in Counter(lab[flagged].tolist()).items()}
    report.removed_share_per_class = {
        k: report.removal_histogram.get(k, 0) / total for k, total in sorted(report.label_histogram.items())
    }
    if warn_share is None:
        return
    for k, removed in report.removal_histogram.items():
        if removed / report.label_histogram[k] >= warn_share and removed >= 5:
            _warn(
                report,
                f"BYE removed {removed}/{report.label_histogram[k]} rows with label {k!r}: unless {k!r} is an "
                "attack target, the split may follow the classes rather than a trigger.",
            )
