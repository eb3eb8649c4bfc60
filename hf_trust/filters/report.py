"""``BYEReport``: everything the BYE selection decided, for auditing and plotting."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hf_trust.atomic import atomic_save, atomic_write_json
from hf_trust.errors import HFTrustCacheError, HFTrustDataError

from .config import BYESelectConfig


@dataclass
class BYEReport:
    """Outcome of BYE's two GMM stages on one dataset.

    Attributes:
        status: ``"ok"``; ``"no_sensitive_layers"`` (nothing removed); ``"capped"`` (the rule flagged more than
            ``max_removal_fraction`` of the rows and only that share, the lowest scores, was removed) or
            ``"majority_flagged"`` (the cap was disabled and more than half the rows were removed) or
            ``"too_few_rows"`` (fewer rows than ``min_rows``: nothing removed). The last three also add a warning.
        num_samples: rows scored.
        num_layers: decoder layers profiled.
        layer_gmms: per layer ``{"weights", "means", "stds", ...}`` of its 2-GMM (low component first).
        layer_bimodal: per layer, whether |μ₁−μ₂| > k_sigma·(σ₁+σ₂).
        layer_kl: per layer KL(N_low‖N_high), the reference's diagnostic.
        layer_bsi: per layer bimodal separation index (Ashman's D of the 2-GMM).
        layer_auroc: per layer AUROC of −entropy for the poison labels, when labels were given.
        sensitive_layers: layers whose mean entropy forms the score.
        score_gmm: the 2-GMM fitted on the scores (``None`` when no layer is sensitive).
        suspicious: per row, whether BYE flags it (these rows are removed).
        removed_fraction: share of rows flagged.
        removal_histogram: flagged count per answer/label value (when a label column exists).
        removed_share_per_class: per answer/label value, the share of its rows that was removed.
        label_histogram: total count per answer/label value, to read the removal histogram against.
        params: the selection settings used (``BYESelectConfig.to_dict()``; :attr:`select_config` reads them
            back).
        warnings: human-readable warnings (e.g. removal concentrated on one label, capped removal).
        nonfinite_rows: rows whose entropies held NaN/inf (imputed by the layer mean before fitting).
        robust: ``layer_select="robust"`` only: candidate layers and their agreement groups.
    """

    status: str
    num_samples: int
    num_layers: int
    layer_gmms: list[dict] = field(default_factory=list)
    layer_bimodal: list[bool] = field(default_factory=list)
    layer_kl: list[float] = field(default_factory=list)
    layer_bsi: list[float] = field(default_factory=list)
    layer_auroc: Optional[list[float]] = None
    sensitive_layers: list[int] = field(default_factory=list)
    score_gmm: Optional[dict] = None
    suspicious: list[bool] = field(default_factory=list)
    removed_fraction: float = 0.0
    removal_histogram: dict = field(default_factory=dict)
    label_histogram: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    removed_share_per_class: dict = field(default_factory=dict)
    nonfinite_rows: list[int] = field(default_factory=list)
    robust: Optional[dict] = None

    @property
    def num_removed(self) -> int:
        return int(sum(self.suspicious))

    @property
    def select_config(self) -> BYESelectConfig:
        """The :class:`BYESelectConfig` this report was produced with (rebuilt from :attr:`params`)."""
        return BYESelectConfig.from_dict(self.params)

    def detection(self, is_poison: list[bool] | np.ndarray) -> dict:
        """Precision / recall / F1 of the flagged rows against known poison labels."""
        y = np.asarray(is_poison, dtype=bool)
        s = np.asarray(self.suspicious, dtype=bool)
        if y.shape != s.shape:
            raise HFTrustDataError(f"{len(y)} poison labels for {len(s)} scored rows; pass one label per row.")
        tp = int((y & s).sum())
        precision = tp / max(int(s.sum()), 1)
        recall = tp / max(int(y.sum()), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "tp": tp,
            "flagged": int(s.sum()),
            "poison": int(y.sum()),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically (a crash never leaves half a report)."""
        return atomic_write_json(path, self.to_dict(), indent=1, default=str)

    @classmethod
    def load(cls, path: str | Path) -> BYEReport:
        """Read a report written by :meth:`save`; a truncated or foreign file is an ``HFTrustCacheError``."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise HFTrustCacheError(
                f"{path} is not a complete BYE report ({exc}); re-run BYEFilter and save the report again."
            ) from exc

    def plot(self, path: str | Path, scores: Optional[Any] = None) -> Path:
        """Per-layer KL / bimodality bars (and the score histogram when ``scores`` is given) to ``path``."""
        # The object-oriented Figure API draws without pyplot, so no global backend is chosen or changed.
        from matplotlib.figure import Figure

        ncols = 2 if scores is not None else 1
        fig = Figure(figsize=(5 * ncols, 3.2))
        axes = np.atleast_1d(fig.subplots(1, ncols))
        colors = ["tab:red" if b else "tab:gray" for b in self.layer_bimodal]
        axes[0].bar(range(self.num_layers), self.layer_kl, color=colors)
        axes[0].set_xlabel("decoder layer")
        axes[0].set_ylabel("KL(low ‖ high)")
        axes[0].set_title("per-layer separation (red = sensitive)")
        if scores is not None:
            sc = np.asarray(scores, dtype=float)
            flag = np.asarray(self.suspicious, dtype=bool)
            axes[1].hist([sc[~flag], sc[flag]], bins=30, stacked=True, label=["kept", "removed"])
            axes[1].set_xlabel("BYE score (mean entropy, sensitive layers)")
            axes[1].legend()
        fig.tight_layout()
        return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png"))
