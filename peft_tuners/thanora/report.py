"""Text table and plots of ThanoRA's per-layer rank allocation (rows from ``ThanoRAModel.allocation_report``).

The plotting functions import matplotlib lazily and never change its backend or global settings; they return
the figure for the caller to save or show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from hf_trust.errors import require_extra


def format_allocation(rows: Sequence[dict]) -> str:
    """Markdown table: module | r_t per task | cooperative rank | H_t per task."""
    if not rows:
        return "(no ThanoRA layers)"
    tasks = list(rows[0]["ranks"])
    head = (
        "| module | "
        + " | ".join(f"r[{t}]" for t in tasks)
        + " | r[coop] | "
        + " | ".join(f"H[{t}]" for t in tasks)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + 2 * len(tasks))]
    for row in rows:
        ent = row["entropy"] or {}
        lines.append(
            f"| {row['module']} | "
            + " | ".join(str(row["ranks"][t]) for t in tasks)
            + f" | {row.get('cooperative', 0)} | "
            + " | ".join(f"{ent[t]:.3f}" if t in ent else "-" for t in tasks)
            + " |"
        )
    return "\n".join(lines)


def _short(module: str) -> str:
    return module.replace("model.layers.", "L").replace("self_attn.", "").replace("mlp.", "")


def plot_allocation(rows: Sequence[dict], title: Optional[str] = None):
    """Figure with per-layer entropy (top) and allotted rank (bottom) for every task."""
    require_extra("matplotlib", extra="plots", feature="plot_allocation")
    import matplotlib.pyplot as plt

    tasks = list(rows[0]["ranks"])
    x = range(len(rows))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 0.25 * len(rows)), 6), sharex=True)
    for t in tasks:
        if rows[0]["entropy"]:
            ax1.plot(x, [r["entropy"][t] for r in rows], marker="o", label=t)
        ax2.plot(x, [r["ranks"][t] for r in rows], marker="s", label=t)
    if any(r.get("cooperative") for r in rows):
        ax2.plot(x, [r.get("cooperative", 0) for r in rows], "k--", label="cooperative")
    ax1.set_ylabel("norm. SV entropy")
    ax2.set_ylabel("rank")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels([_short(r["module"]) for r in rows], rotation=90, fontsize=6)
    ax1.legend()
    ax2.legend(fontsize=7)
    if title:
        ax1.set_title(title)
    fig.tight_layout()
    return fig


def plot_allocation_heatmap(rows: Sequence[dict], title: Optional[str] = None):
    """Heat map of the task share r_t / Σ_s r_s (tasks × layers), the number of ranks written in each cell.

    A uniform split is one flat colour; the paper's figure shows task shares crossing between early and late
    layers, which appears here as colour bands that swap rows along the x axis.
    """
    require_extra("matplotlib", extra="plots", feature="plot_allocation_heatmap")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(rows[0]["ranks"])
    ranks = np.array([[row["ranks"][t] for row in rows] for t in tasks], dtype=float)
    share = ranks / ranks.sum(0, keepdims=True)
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(rows)), 0.6 * len(tasks) + 2))
    im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, vmax=max(0.5, float(share.max())))
    if len(rows) <= 60:
        for i in range(len(tasks)):
            for j in range(len(rows)):
                ax.text(j, i, int(ranks[i, j]), ha="center", va="center", fontsize=6, color="w")
    ax.set_yticks(range(len(tasks)))
    ax.set_yticklabels(tasks)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([_short(r["module"]) for r in rows], rotation=90, fontsize=6)
    fig.colorbar(im, ax=ax, label="task share of the task ranks")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
