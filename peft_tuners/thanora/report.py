"""Text table and plot of ThanoRA's per-layer rank allocation (rows from ``ThanoRAModel.allocation_report``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional


def format_allocation(rows: Sequence[dict]) -> str:
    """Markdown table: module | r_t per task | H_t per task."""
    if not rows:
        return "(no ThanoRA layers)"
    tasks = list(rows[0]["ranks"])
    head = "| module | " + " | ".join(f"r[{t}]" for t in tasks) + " | " + " | ".join(f"H[{t}]" for t in tasks) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(tasks))]
    for row in rows:
        ent = row["entropy"] or {}
        lines.append(
            f"| {row['module']} | "
            + " | ".join(str(row["ranks"][t]) for t in tasks)
            + " | "
            + " | ".join(f"{ent[t]:.3f}" if t in ent else "-" for t in tasks)
            + " |"
        )
    return "\n".join(lines)


def plot_allocation(rows: Sequence[dict], title: Optional[str] = None):
    """Figure with per-layer entropy (top) and allotted rank (bottom) for every task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(rows[0]["ranks"])
    x = range(len(rows))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 0.25 * len(rows)), 6), sharex=True)
    for t in tasks:
        if rows[0]["entropy"]:
            ax1.plot(x, [r["entropy"][t] for r in rows], marker="o", label=t)
        ax2.plot(x, [r["ranks"][t] for r in rows], marker="s", label=t)
    ax1.set_ylabel("norm. SV entropy")
    ax2.set_ylabel("rank")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels([r["module"].replace("model.layers.", "L") for r in rows], rotation=90, fontsize=6)
    ax1.legend()
    if title:
        ax1.set_title(title)
    fig.tight_layout()
    return fig
