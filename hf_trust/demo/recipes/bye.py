"""BYE backdoor cleaning.

Quick run: the toy LLaVA (config-built CLIP 2×48 + Llama 4×64, 16 image tokens,
``hf_trust.demo.studies.bye``) fine-tuned from scratch on a texture task in which 10 % of the 400 training
images carry a white one-patch trigger and the target answer.  Every seed (three) fine-tunes on the poisoned
set, scores the attention entropies and applies three selection rules (:data:`DEMO_RULES`: the released code's
rule, the separation-index rule ``bsi`` (our reconstruction, looser than the released code's) and
``layer_select="robust"``) to them.  The attention-collapse and detection verdicts are read from these seeds.
Whether a rule removes the backdoor needs a re-fine-tune per rule and seed, which does not fit the demo's
budget, so those verdicts are read from the stored 10-seed sweep of the same setting
(``benchmarks/results/bye.md``, labelled so in the claims table).

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


def _toy_runs(ctx: RecipeContext) -> list[dict[str, Any]]:
    """Fine-tune and score the toy on each seed; every rule's detection figures (no re-fine-tune)."""
    runs = []
    for s in ctx.progress(ctx.seeds, desc="bye seeds"):
        runs.append(study.toy_defence(seed=s, poison_rate=0.1, trigger="patch", rules=DEMO_RULES, refit=False))
        r = runs[-1]
        ctx.log(
            f"bye toy seed {s}: ASR {r['asr']:.2f} CP {r['cp']:.2f}; best layer AUROC "
            f"{np.nanmax(r['layer_auroc']):.3f}; "
            + "; ".join(
                f"{k}: removed {v['flagged'].sum()} (P {v['precision']:.2f} R {v['recall']:.2f})"
                for k, v in r["rules"].items()
            )
        )
    return runs


def _add(result: RecipeResult, setting: str, metric: str, values: list[float]) -> None:
    v = np.asarray(values, dtype=float)
    result.add(setting, metric, float(np.nanmean(v)), std=float(np.nanstd(v)) if len(v) > 1 else None, n=len(v))


def _quick_rows(ctx: RecipeContext, result: RecipeResult, runs: list[dict[str, Any]]) -> None:
    """The per-seed figures (rows), the entropy histogram of the first seed and a note per seed and rule."""
    setting = "toy LLaVA, 400 rows, 10% patch poison, 250 steps"
    _add(result, setting, "ASR before BYE", [r["asr"] for r in runs])
    _add(result, setting, "clean acc. before BYE", [r["cp"] for r in runs])
    _add(result, setting, "best per-layer AUROC of −entropy", [float(np.nanmax(r["layer_auroc"])) for r in runs])
    for rule in DEMO_RULES:
        rr = [r["rules"][rule] for r in runs]
        _add(result, setting, f"[{rule}] rows removed", [int(x["flagged"].sum()) for x in rr])
        _add(result, setting, f"[{rule}] detection precision", [x["precision"] for x in rr])
        _add(result, setting, f"[{rule}] detection recall", [x["recall"] for x in rr])
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


def _span(values: list[float]) -> str:
    lo, hi = seed_interval(values)
    return f"{lo:.2f}..{hi:.2f}"


def _quick_claims(ctx: RecipeContext, result: RecipeResult, runs: list[dict[str, Any]]) -> None:
    """Attention collapse and detection from this run's seeds; backdoor removal per rule from the stored sweep."""
    n, seeds = len(runs), ", ".join(map(str, ctx.seeds))
    best = [float(np.nanmax(r["layer_auroc"])) for r in runs]
    lo, _ = seed_interval(best)
    # control: a layer that does not see the trigger ranks poisoned rows at chance (AUROC 0.5)
    result.add_claim(
        "Backdoor triggers collapse image-attention entropy in some layers (attention collapse)",
        f"toy LLaVA: best per-layer AUROC of −entropy for the poisoned rows {_span(best)} (min..max over seeds "
        f"{seeds}; chance 0.5)",
        "reproduced" if lo >= 0.95 else "not reproduced",
        seeds=n,
    )
    ref = [r["rules"]["reference"] for r in runs]
    p, rc = [x["precision"] for x in ref], [x["recall"] for x in ref]
    # control: removing rows at random has precision = the poison rate (0.1); the targets are the spec's
    ok = seed_interval(p)[0] >= 0.90 and seed_interval(rc)[0] >= 0.95
    result.add_claim(
        "BYE (reference rule) detects the poisoned rows with high precision and recall (targets P ≥ 0.90, R ≥ 0.95)",
        f"precision {_span(p)}, recall {_span(rc)} (min..max over seeds {seeds}; random removal: precision 0.10)",
        "reproduced" if ok else "not reproduced",
        seeds=n,
    )
    for rule in DEMO_RULES:
        here = [r["rules"][rule]["recall"] for r in runs]
        claim = f"BYE ({rule} layer rule) removes the poisoned rows: ASR ≈ 0 after re-fine-tuning, clean accuracy kept"
        sweep = stored_toy_sweep(rule)
        if sweep is None:  # an installed wheel has no benchmarks/: the re-fine-tunes do not fit the demo
            result.note(f"{claim}: not judged here (needs benchmarks/results/bye.md of a source checkout).")
            continue
        # Reproduced only if the backdoor is gone in every stored seed (the whole min..max interval of ASR after
        # is ≤ 0.05, far from the control, ASR before ≈ 1) and the mean clean accuracy stays within 0.02.
        ok = sweep["gone"] == sweep["seeds"] and sweep["cp_after"] >= sweep["cp_before"] - 0.02
        result.add_claim(
            claim,
            f"toy sweep: backdoor gone (ASR ≤ 0.05) in {sweep['gone']}/{sweep['seeds']} seeds (ASR before "
            f"{sweep['asr_before']:.2f}), CP {sweep['cp_before']:.2f} → {sweep['cp_after']:.2f} (mean); this run's "
            f"recall {_span(here)} over seeds {seeds} (detection only)",
            "reproduced" if ok else "not reproduced",
            stored=f"benchmarks/results/bye.md, toy sweep of this setting (benchmarks/bye_sweep.py), "
            f"{sweep['seeds']} seeds",
        )


def _quick(ctx: RecipeContext, result: RecipeResult) -> None:
    runs = _toy_runs(ctx)
    _quick_rows(ctx, result, runs)
    _quick_claims(ctx, result, runs)
    result.note(
        "Toy-sized model on purpose: the SmolLM2-decoder LLaVA did not learn the backdoor in the few LoRA steps "
        "that fit the demo's budget on 2 CPU cores (its --full run does). The re-fine-tunes after each rule's "
        "removal (three more trainings per seed) do not fit either, so the rule verdicts come from the stored "
        "10-seed toy sweep of this setting (benchmarks/results/bye.md); this run's seeds give the attention-"
        "collapse and detection verdicts."
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
    best = [r["max_auroc"] for r in runs]
    result.add_claim(
        "Backdoor triggers collapse image-attention entropy in some layers",
        f"best per-layer AUROC of −entropy {_span(best)} (min..max over {n} seeds; chance 0.5)",
        "reproduced" if seed_interval(best)[0] >= 0.95 else "not reproduced",
        seeds=n,
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
            seeds=n,
            interval="backdoor gone in every seed",
        )


@register_recipe(
    "bye", title="BYE backdoor cleaning on a toy LLaVA (10% one-patch poison)", minutes=1.8, quick_seeds=(0, 1, 2)
)
def run(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    (_full if ctx.full else _quick)(ctx, result)
    return result
