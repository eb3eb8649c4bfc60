"""BYE backdoor cleaning.

Quick run (about 2 minutes on 2 CPU cores): the toy LLaVA (config-built CLIP 2×48 + Llama 4×64, 16 image
tokens, ``hf_trust.demo.studies.bye``) fine-tuned from scratch on a texture task in which 10 % of the 400
training images carry a white one-patch trigger and the target answer.  Algorithm 1 end to end: fine-tune on
the poisoned set → BYE (the reference selection rule, the paper's BSI rule and ``layer_select="robust"`` on the
same entropies) → re-fine-tune the base on each cleaned set → attack success (ASR) and clean accuracy (CP) on
held-out images.

``--full``: the LLaVA with the real SmolLM2-135M decoder on captioned digits (3 seeds, 300 training rows,
120 LoRA steps), every selection rule's detection figures and a re-fine-tune on each rule's cleaned set.
"""

from __future__ import annotations

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.studies import bye as study

DEMO_RULES = {k: study.RULES[k] for k in ("reference", "bsi2", "robust")}


def _quick(ctx: RecipeContext, result: RecipeResult) -> None:
    runs = []
    for s in ctx.progress(ctx.seeds, desc="bye seeds"):
        runs.append(study.toy_defence(seed=s, poison_rate=0.1, trigger="patch", rules=DEMO_RULES))
        r = runs[-1]
        ctx.log(
            f"bye toy seed {s}: ASR {r['asr']:.2f} CP {r['cp']:.2f} before; "
            + "; ".join(
                f"{k}: removed {v['flagged'].sum()} (P {v['precision']:.2f} R {v['recall']:.2f}) → ASR "
                f"{v['asr_after']:.2f} CP {v['cp_after']:.2f}"
                for k, v in r["rules"].items()
            )
        )
    setting = "toy LLaVA, 400 rows, 10% patch poison, 250 steps"
    n = len(runs)

    def add(metric: str, values: list[float]) -> None:
        v = np.asarray(values, dtype=float)
        result.add(setting, metric, float(np.nanmean(v)), std=float(np.nanstd(v)) if n > 1 else None, n=n)

    add("ASR before BYE", [r["asr"] for r in runs])
    add("clean acc. before BYE", [r["cp"] for r in runs])
    for rule in DEMO_RULES:
        rr = [r["rules"][rule] for r in runs]
        add(f"[{rule}] rows removed", [int(x["flagged"].sum()) for x in rr])
        add(f"[{rule}] detection precision", [x["precision"] for x in rr])
        add(f"[{rule}] detection recall", [x["recall"] for x in rr])
        add(f"[{rule}] ASR after re-fine-tune", [x["asr_after"] for x in rr])
        add(f"[{rule}] clean acc. after", [x["cp_after"] for x in rr])
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
    best = float(np.mean([np.nanmax(r["layer_auroc"]) for r in runs]))
    add("best per-layer AUROC of −entropy", [np.nanmax(r["layer_auroc"]) for r in runs])
    result.add_claim(
        "Backdoor triggers collapse image-attention entropy in some layers (attention collapse)",
        f"toy LLaVA: best per-layer AUROC of −entropy for the poisoned rows {best:.3f} ({n} seed(s))",
        "reproduced" if best >= 0.95 else "not reproduced",
    )
    asr_b = float(np.mean([r["asr"] for r in runs]))
    cp_b = float(np.mean([r["cp"] for r in runs]))
    for rule in DEMO_RULES:
        rr = [r["rules"][rule] for r in runs]
        asr_a = float(np.mean([x["asr_after"] for x in rr]))
        cp_a = float(np.mean([x["cp_after"] for x in rr]))
        ok = asr_b >= 0.9 and asr_a <= 0.05 and cp_a >= cp_b - 0.02
        result.add_claim(
            f"BYE ({rule} layer rule) removes the poisoned rows: ASR ≈ 0 after re-fine-tuning, clean accuracy kept",
            f"toy LLaVA, {n} seed(s): ASR {asr_b:.2f} → {asr_a:.2f}, CP {cp_b:.2f} → {cp_a:.2f}",
            "reproduced" if ok else "not reproduced",
        )
    result.note(
        "Toy-sized model on purpose: the SmolLM2-decoder LLaVA did not learn the backdoor in the few LoRA steps "
        "that fit a 2-minute budget on 2 CPU cores (its --full run does). One seed is one draw: over 10 toy "
        "seeds the backdoor is gone after re-fine-tuning in 6/10 seeds with the reference rule, 10/10 with the "
        "paper's BSI rule (removing 31 % of the rows) and 3/10 with the robust rule (precise, removes 7 %, but "
        "misses part of the poison); no rule keeps ≥ 95 % of a clean toy set; see benchmarks/results/bye.md."
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


@register_recipe("bye", title="BYE backdoor cleaning on a toy LLaVA (10% one-patch poison)", minutes=2.0)
def run(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    (_full if ctx.full else _quick)(ctx, result)
    return result
