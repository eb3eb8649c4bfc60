"""The study's mechanism diagnostics: how each client's prompt update aligns with the global update."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from hf_trust.atomic import atomic_save, atomic_write_json
from hf_trust.errors import HFTrustKeyError, require_extra


def _save_figure(fig: Any, path: Path) -> None:
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def token_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> float:
    """Cosine between two updates of shape ``(n_ctx, d)``, per token, averaged over tokens."""
    a, b = a.double().reshape(-1, a.shape[-1]), b.double().reshape(-1, b.shape[-1])
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)
    return float(cos.mean())


def round_diagnostics(client_deltas: dict[int, dict[str, torch.Tensor]], global_delta: dict[str, torch.Tensor]) -> dict:
    """Per prompt group (``text``/``vision``): each client's update cosine to the global update (per token,
    averaged over tokens and depths) and the client-client similarity matrix (same cosine)."""
    clients = sorted(client_deltas)
    out: dict = {"clients": clients}
    for group in ("text", "vision"):
        keys = [k for k in global_delta if k.split(".")[-1].startswith(group + "_")]
        if not keys:
            continue
        to_global = [sum(token_cosine(client_deltas[c][k], global_delta[k]) for k in keys) / len(keys) for c in clients]
        matrix = [
            [sum(token_cosine(client_deltas[a][k], client_deltas[b][k]) for k in keys) / len(keys) for b in clients]
            for a in clients
        ]
        out[group] = {
            "cos_to_global": to_global,
            "similarity": matrix,
            "mean_cos_to_global": sum(to_global) / len(to_global),
        }
    return out


def save_diagnostics(diagnostics: list[dict], out_dir: str | Path) -> list[Path]:
    """Writes ``diagnostics.json``, the cosine-per-round plot and the last round's similarity matrices."""
    # Bare Figures: no pyplot state and no backend choice imposed on the caller.
    require_extra("matplotlib", extra="plots", feature="save_diagnostics")
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "diagnostics.json", diagnostics, indent=1)
    paths = [out / "diagnostics.json"]
    groups = [g for g in ("text", "vision") if diagnostics and g in diagnostics[-1]]
    if not groups:
        return paths
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for g in groups:
        ax.plot(
            [d["round"] for d in diagnostics],
            [d[g]["mean_cos_to_global"] for d in diagnostics],
            label={"text": "LPT", "vision": "VPT"}[g],
        )
    ax.set_xlabel("round")
    ax.set_ylabel("cos(client update, global update)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out / "update_cosine.png")
    paths.append(out / "update_cosine.png")
    fig = Figure(figsize=(3.4 * len(groups), 3))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, g in zip(axes[0], groups):
        im = ax.imshow(diagnostics[-1][g]["similarity"], vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_title(
            f"{'LPT' if g == 'text' else 'VPT'} client similarity (round {diagnostics[-1]['round']})", fontsize=8
        )
        ax.set_xlabel("client")
        ax.set_ylabel("client")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    _save_figure(fig, out / "client_similarity.png")
    paths.append(out / "client_similarity.png")
    return paths


def summarize(history: list[dict], metric_key: str, last: int = 5) -> dict[str, Optional[float]]:
    """The study's reporting: best round value, and mean/std over the last ``last`` evaluated rounds."""
    vals = [(r["round"], r[metric_key]) for r in history if r.get(metric_key) is not None]
    if not vals:
        raise HFTrustKeyError(
            f"{metric_key!r} is not in the history; evaluated keys: "
            f"{sorted({k for r in history for k in r if k.startswith('eval_')})}."
        )
    tail = torch.tensor([v for _, v in vals[-last:]], dtype=torch.float64)
    best_round, best = max(vals, key=lambda rv: rv[1])
    return {
        "best": float(best),
        "best_round": best_round,
        "last_mean": float(tail.mean()),
        "last_std": float(tail.std(unbiased=False)),
    }
