"""BYE backdoor cleaning.

Quick run: the toy LLaVA (config-built CLIP 2×48 + Llama 4×64, 16 image tokens,
``hf_trust.demo.studies.bye``) fine-tuned from scratch on a texture task in which 10 % of the 400 training
images carry a white one-patch trigger and the target answer.  Every seed fine-tunes on the poisoned set and
scores the attention entropies (the attention-collapse claim is read from the three seeds); the first seed runs
Algorithm 1 to the end: BYE (the reference selection rule, the BSI ≥ 2 rule (reconstructed; looser than the
released code's rule) and ``layer_select="robust"`` on the same entropies) → re-fine-tune the base on each
cleaned set → attack success (ASR) and clean accuracy (CP) on held-out images.  Whether a rule removes the
backdoor varies from seed to seed, so those verdicts are read from the stored 10-seed sweep of the same setting
(``benchmarks/results/bye.md``) and the run's own seed is shown beside them as indicative.

``--full``: the LLaVA with the real SmolLM2-135M decoder on captioned digits (3 seeds, 300 training rows,
120 LoRA steps), every selection rule's detection figures and a re-fine-tune on each rule's cleaned set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.registry import results_file, seed_interval
from hf_trust.demo.studies import bye as study

DEMO_RULES = {k: study.RULES[k] for k in ("reference", "bsi2", "robust")}

#: The stored sweep the quick recipe's rule verdicts come from: its setting is the quick recipe's.
SWEEP = {"trigger": "patch", "poison": "10 %", "seeds": "10"}


def stored_toy_sweep(rule: str, path: Optional[Path] = None) -> Optional[dict[str, Any]]:
    """The 10-seed toy sweep's row for ``rule`` in the quick recipe's setting, from ``benchmarks/results/bye.md``.

    Returns ``{"gone": k, "seeds": n, "cp_before": x, "cp_after": y, "asr_before": z}`` (``gone``: seeds
    whose ASR after the re-fine-tune is ≤ 0.05), or ``None`` when the file or the row is not there (an
    installed wheel has no ``benchmarks/``).
    """
    path = path or results_file("bye")
    if path is None:
        return None
    header: Optional[list[str]] = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None  # a table ends at the first line that is not a row
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["trigger", "poison"]:
            header = cells
            continue
        if header is None or len(cells) != len(header):
            continue
        row = dict(zip(header, cells))
        if all(row.get(k) == v for k, v in SWEEP.items()) and row.get("rule") == rule:
            try:
                gone, seeds = (int(x) for x in row["ASR after ≤ 0.05"].split("/"))
                asr_before, cp_before = (float(x) for x in row["ASR / CP before"].split("/"))
                cp_after = float(row["CP after"].split("±")[0])
            except (KeyError, ValueError):
                return None
            return {
                "gone": gone,
                "seeds": seeds,
                "asr_before": asr_before,
                "cp_before": cp_before,
                "cp_after": cp_after,
            }
    return None


def _quick(ctx: RecipeContext, result: RecipeResult) -> None:
    runs = []
    for i, s in enumerate(ctx.progress(ctx.seeds, desc="bye seeds")):
        # Only the first seed re-fine-tunes (three more trainings per seed would not fit the demo's budget);
        # the others give the entropies, whose separation is the attention-collapse claim.
        runs.append(study.toy_defence(seed=s, poison_rate=0.1, trigger="patch", rules=DEMO_RULES, refit=i == 0))
        r = runs[-1]
        ctx.log(
            f"bye toy seed {s}: ASR {r['asr']:.2f} CP {r['cp']:.2f} before; best layer AUROC "
            f"{np.nanmax(r['layer_auroc']):.3f}; "
            + "; ".join(
                f"{k}: removed {v['flagged'].sum()} (P {v['precision']:.2f} R {v['recall']:.2f})"
                + (f" → ASR {v['asr_after']:.2f} CP {v['cp_after']:.2f}" if "asr_after" in v else "")
                for k, v in r["rules"].items()
            )
        )
    setting = "toy LLaVA, 400 rows, 10% patch poison, 250 steps"
    n = len(runs)

    def add(metric: str, values: list[float]) -> None:
        v = np.asarray(values, dtype=float)
        k = len(v)
        result.add(setting, metric, float(np.nanmean(v)), std=float(np.nanstd(v)) if k > 1 else None, n=k)

    add("ASR before BYE", [r["asr"] for r in runs])
    add("clean acc. before BYE", [r["cp"] for r in runs])
    for rule in DEMO_RULES:
        rr = [r["rules"][rule] for r in runs]
        add(f"[{rule}] rows removed", [int(x["flagged"].sum()) for x in rr])
        add(f"[{rule}] detection precision", [x["precision"] for x in rr])
        add(f"[{rule}] detection recall", [x["recall"] for x in rr])
        add(f"[{rule}] ASR after re-fine-tune (first seed)", [rr[0]["asr_after"]])
        add(f"[{rule}] clean acc. after (first seed)", [rr[0]["cp_after"]])
    r0, s0 = runs[0], ctx.seeds[0]
    rob = r0["rules"]["robust"]
    fig = study.plot_layer_histograms(
        r0["E"],
        rob["flagged"],
        r0["poison"],
        title=f"toy seed {s0}: per-layer attention entropy, robust rule removed {int(rob['flagged'].sum())} rows "
        f"(layers {rob['report'].sensitive_layers}; true poison outlined)",
    )
    result.add_plot(ctx.savefig(fig, "bye_entropy_histograms.png"))
    for s, r in zip(ctx.seeds, runs):
        for rule, v in r["rules"].items():
            rep = v["report"]
            result.note(
                f"seed {s}, {rule}: status={rep.status}, layers={rep.sensitive_layers}, removed rows by answer "
                f"token={dict(sorted(rep.removal_histogram.items())) or '{}'} (target token {study.TARGET})"
            )
    best = [float(np.nanmax(r["layer_auroc"])) for r in runs]
    add("best per-layer AUROC of −entropy", best)
    lo, hi = seed_interval(best)
    result.add_claim(
        "Backdoor triggers collapse image-attention entropy in some layers (attention collapse)",
        f"toy LLaVA: best per-layer AUROC of −entropy for the poisoned rows {np.mean(best):.3f}"
        + (f" (min..max {lo:.3f}..{hi:.3f} over seeds {', '.join(map(str, ctx.seeds))})" if n > 1 else ""),
        "reproduced" if lo >= 0.95 else "not reproduced",
        seeds=n,
    )
    r0 = runs[0]
    for rule in DEMO_RULES:
        x = r0["rules"][rule]
        here = (
            f"this run (seed {ctx.seeds[0]}, indicative): ASR {r0['asr']:.2f} → {x['asr_after']:.2f}, "
            f"CP {r0['cp']:.2f} → {x['cp_after']:.2f}"
        )
        claim = f"BYE ({rule} layer rule) removes the poisoned rows: ASR ≈ 0 after re-fine-tuning, clean accuracy kept"
        sweep = stored_toy_sweep(rule)
        if sweep is None:  # no stored sweep here: the run's own seed, marked as one draw
            ok = r0["asr"] >= 0.9 and x["asr_after"] <= 0.05 and x["cp_after"] >= r0["cp"] - 0.02
            result.add_claim(claim, here, "reproduced" if ok else "not reproduced", seeds=1)
            continue
        # Reproduced only if the backdoor is gone in every stored seed (the worst seed clears ASR ≤ 0.05)
        # and the mean clean accuracy after re-fine-tuning stays within 0.02 of before.
        ok = sweep["gone"] == sweep["seeds"] and sweep["cp_after"] >= sweep["cp_before"] - 0.02
        result.add_claim(
            claim,
            f"toy sweep: backdoor gone (ASR ≤ 0.05) in {sweep['gone']}/{sweep['seeds']} seeds, CP "
            f"{sweep['cp_before']:.2f} → {sweep['cp_after']:.2f} (mean); {here}",
            "reproduced" if ok else "not reproduced",
            stored=f"benchmarks/results/bye.md, toy sweep with this setting, {sweep['seeds']} seeds",
        )
    result.note(
        "Toy-sized model on purpose: the SmolLM2-decoder LLaVA did not learn the backdoor in the few LoRA steps "
        "that fit a 2-minute budget on 2 CPU cores (its --full run does). One seed is one draw, so the rule "
        "verdicts come from the stored 10-seed toy sweep of this setting (benchmarks/results/bye.md); the "
        "re-fine-tune of this run's first seed is shown beside them."
    )


def _full(ctx: RecipeContext, result: RecipeResult) -> None:
    size = dict(n_train=300, n_test=100, steps=120)
    runs = []
    for s in ctx.progress(ctx.seeds, desc="bye seeds"):
        runs.append(study.run_digit_seed(s, **size, refit_rules=tuple(study.RULES)))
        r = runs[-1]
        ctx.log(
            f"bye digits seed {s}: ASR {r['asr_before']:.2f}, best layer AUROC {r['max_auroc']:.3f}; "
            + "; ".join(f"{k}: P {v['precision']:.2f} R {v['recall']:.2f}" for k, v in r["rules"].items())
        )
    setting = f"SmolLM2-decoder LLaVA, digits, 10% poison, {size['steps']} LoRA steps"
    n = len(runs)

    def add(metric: str, values: list[float]) -> None:
        v = np.asarray(values, dtype=float)
        result.add(setting, metric, float(np.nanmean(v)), std=float(np.nanstd(v)) if n > 1 else None, n=n)

    add("ASR before BYE", [r["asr_before"] for r in runs])
    add("clean acc. before BYE", [r["cp_before"] for r in runs])
    add("best per-layer AUROC", [r["max_auroc"] for r in runs])
    for rule in study.RULES:
        add(f"[{rule}] detection precision", [r["rules"][rule]["precision"] for r in runs])
        add(f"[{rule}] detection recall", [r["rules"][rule]["recall"] for r in runs])
        add(f"[{rule}] removed share", [r["rules"][rule]["removed"] for r in runs])
        add(f"[{rule}] ASR after re-fine-tune", [r["rules"][rule]["asr_after"] for r in runs])
        add(f"[{rule}] clean acc. after", [r["rules"][rule]["cp_after"] for r in runs])
    r0 = runs[0]
    fig = study.plot_layer_histograms(
        r0["E"], r0["rules"]["robust"]["flagged"], r0["poison"], title=f"digits seed {ctx.seeds[0]} (robust rule)"
    )
    result.add_plot(ctx.savefig(fig, "bye_entropy_histograms.png"))
    best = float(np.mean([r["max_auroc"] for r in runs]))
    result.add_claim(
        "Backdoor triggers collapse image-attention entropy in some layers",
        f"best per-layer AUROC of −entropy {best:.3f} (mean of {n} seeds)",
        "reproduced" if best >= 0.95 else "not reproduced",
    )
    asr_b = float(np.mean([r["asr_before"] for r in runs]))
    for rule in study.RULES:
        after = [r["rules"][rule]["asr_after"] for r in runs]
        gone = sum(a <= 0.05 for a in after)
        removed = float(np.mean([r["rules"][rule]["removed"] for r in runs]))
        # clean accuracy is at chance on this recipe (see benchmarks/results/bye.md), so only the ASR is judged
        result.add_claim(
            f"BYE ({rule} layer rule) removes the backdoor: ASR ≈ 0 after re-fine-tuning on the kept rows",
            f"ASR {asr_b:.2f} → {np.mean(after):.2f}; gone (≤ 0.05) in {gone}/{n} seeds; {removed:.0%} of rows removed",
            "reproduced" if asr_b >= 0.9 and gone == n else "not reproduced",
        )


@register_recipe(
    "bye", title="BYE backdoor cleaning on a toy LLaVA (10% one-patch poison)", minutes=3.0, quick_seeds=(0, 1, 2)
)
def run(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    (_full if ctx.full else _quick)(ctx, result)
    return result
