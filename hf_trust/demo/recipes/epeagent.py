"""EPEAgent on a real LLM: SmolLM2-135M-Instruct as every agent's backbone, with and without the privacy agent.

Protocol of the paper's Table 1 on the generated financial and medical sets: utility (MCQ accuracy of the
terminal agent), privacy-MCQ (the labelled agent picks "Refuse to answer"), privacy-OEQ (exact refusal
sentence), plus the ledger's leakage and permitted-field recall on the prompts actually delivered.
"""

from __future__ import annotations

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe

METRICS = ("utility", "privacy_mcq", "privacy_oeq", "leakage", "permitted_recall")


@register_recipe("epeagent", title="EPEAgent: 3-agent MAS on SmolLM2 with / without the privacy agent", minutes=3.0)
def run(ctx: RecipeContext) -> RecipeResult:
    import torch

    from hf_trust.agents.evaluation import evaluate_mas
    from hf_trust.demo.studies.epeagent import smollm2_backend

    torch.set_num_threads(1)
    result = RecipeResult()
    n = (
        dict(n_users=25, n_utility=30, n_privacy_mcq=30, n_privacy_oeq=30)
        if ctx.full
        else dict(n_users=5, n_utility=1, n_privacy_mcq=1, n_privacy_oeq=1)
    )
    backend = smollm2_backend(max_new_tokens=32 if ctx.full else 20)
    for domain in ("financial", "medical"):
        for with_pa in (False, True):
            per_seed = {m: [] for m in METRICS}
            for seed in ctx.seeds:
                r = evaluate_mas(backend, domain, with_pa, seed=seed, progress=ctx.progress, **n)
                for m in METRICS:
                    per_seed[m].append(r[m])
            setting = f"{domain}, {'EPEAgent' if with_pa else 'baseline (no C_A)'}"
            for m in METRICS:
                vals = np.asarray(per_seed[m], dtype=float)
                result.add(
                    setting,
                    m,
                    float(np.nanmean(vals)),
                    std=float(np.nanstd(vals)) if len(vals) > 1 else None,
                    n=len(vals),
                    note=f"{n['n_utility']}/{n['n_privacy_mcq']}/{n['n_privacy_oeq']} questions per seed",
                )
    result.note(
        "Paper Table 1 (frontier LLMs): privacy +44..+82 points with C_A, utility -0.5..+2.1. "
        "SmolLM2-135M is far weaker than those backbones; the protocol, not the numbers, is comparable."
    )
    return result
