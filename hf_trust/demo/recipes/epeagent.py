"""EPEAgent: value-level leakage, permitted recall and utility with no / rule-based / model privacy agent.

Quick demo (about two minutes on 2 CPU cores): the deterministic 3-agent MAS of
``hf_trust.demo.studies.epeagent`` (leaky upstream summarisers, a reading terminal agent) on held-out generated
users, without and with the rule-based privacy agent, over the demo seeds; then a few TRL SFT steps of the
SmolLM2-135M-Instruct privacy rewriter (LoRA) and its context-stage leakage/recall on held-out messages
before and after.  ``--full`` runs all four arms (none / rule / untrained / TRL-trained model) end to end.
"""

from __future__ import annotations

import random
import time

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe

METRICS = ("leakage", "permitted_recall", "context_leakage", "context_recall", "utility", "privacy_mcq", "privacy_oeq")


def _table(per_seed: dict[str, list[dict]]) -> dict[str, dict[str, list[float]]]:
    out = {}
    for arm, runs in per_seed.items():
        out[arm] = {}
        for m in METRICS:
            vals = np.asarray([r[m] for r in runs if isinstance(r.get(m), float)], dtype=float)
            vals = vals[~np.isnan(vals)]
            if len(vals):
                out[arm][m] = [float(vals.mean()), float(vals.std()), int(len(vals))]
    return out


@register_recipe(
    "epeagent",
    title="EPEAgent: value-level leakage / recall / utility, rule-based vs TRL-trained privacy agent",
    minutes=2.0,
)
def run(ctx: RecipeContext) -> RecipeResult:
    import torch

    from hf_trust import assets
    from hf_trust.agents import PrivacyEnhancingAgent, generate_profiles, hf_chat_backend, rewrite_examples
    from hf_trust.demo.studies.epeagent import (
        compare,
        eval_questions,
        plot_comparison,
        run_arm,
        score_rewrites,
        train_rewriter,
    )

    torch.set_num_threads(1)
    result = RecipeResult()
    model, tok = assets.load_smollm2()
    if ctx.full:
        res = compare(
            model,
            tok,
            seeds=ctx.seeds,
            train_steps=40,
            n_users=10,
            n_utility=2,
            n_privacy=1,
            log=ctx.log,
            output_dir=str(ctx.out_dir / "trainer"),
        )
        per_seed = {arm: [r for runs in by_dom.values() for r in runs] for arm, by_dom in res["results"].items()}
        trained_note = f"TRL SFT 40 steps on {res['train_rows']} rows"
    else:
        per_seed = {"no privacy agent": [], "rule-based": []}
        for seed in ctx.seeds:
            for domain in ("financial", "medical"):
                profiles, qs = eval_questions(domain, seed, n_users=10, n_utility=6, n_privacy=2)
                per_seed["no privacy agent"].append(run_arm(domain, profiles, qs, None, seed))
                per_seed["rule-based"].append(run_arm(domain, profiles, qs, lambda p: PrivacyEnhancingAgent(p), seed))
        # A few TRL steps of the model privacy agent, scored on held-out messages before and after.
        held_out = generate_profiles("financial", 4, seed=ctx.seeds[0])
        rows = rewrite_examples("financial", held_out, n_per_profile=1, seed=ctx.seeds[0], templates="eval")
        rows = random.Random(0).sample(rows, 1)
        before = score_rewrites(hf_chat_backend(model, tok, max_new_tokens=48), rows, held_out)
        t0 = time.perf_counter()
        trained, log, n_rows = train_rewriter(
            model,
            tok,
            steps=2,
            n_train_users=4,
            n_per_profile=1,
            output_dir=str(ctx.out_dir / "trainer"),
            logging_steps=1,
        )
        after = score_rewrites(hf_chat_backend(trained, tok, max_new_tokens=48), rows, held_out)
        losses = [round(h["loss"], 3) for h in log if "loss" in h]
        trained_note = f"TRL SFT 2 steps on {n_rows} rows in {time.perf_counter() - t0:.0f} s, losses {losses}"
        for name, sc in (("untrained SmolLM2 rewriter", before), ("SmolLM2 rewriter after 2 TRL steps", after)):
            for m in ("context_leakage", "context_recall"):
                result.add(name, m, sc[m], n=len(rows), note="1 held-out message (context stage only; a smoke check)")
    table = _table(per_seed)
    for arm, metrics in table.items():
        for m, (mean, std, n) in metrics.items():
            result.add(arm, m, mean, std=std if n > 1 else None, n=n, note="seeds x domains")
    fig = plot_comparison(table, "EPEAgent on held-out users: value-level leakage, recall, utility")
    result.add_plot(ctx.savefig(fig, "epeagent_leakage_recall_utility.png"))
    result.note(
        "Leakage is measured on the delivered texts by a value-level detector that shares no code with the privacy "
        "agent (numbers in any format, scaled/spelt-out numbers, dates, case/whitespace/line splits, partial ids "
        f"and names). {trained_note}. Local agents are deterministic so only the privacy agent differs."
    )
    none, rule = table["no privacy agent"], table["rule-based"]
    measured = (
        f"value leakage {none['leakage'][0]:.2f} -> {rule['leakage'][0]:.3f} (rule-based C_A), permitted recall "
        f"{rule['permitted_recall'][0]:.2f}, utility {none['utility'][0]:.2f} -> {rule['utility'][0]:.2f}"
    )
    ok = (
        rule["leakage"][0] <= 0.05
        and rule["permitted_recall"][0] >= 0.99
        and rule["utility"][0] >= none["utility"][0] - 0.05
    )
    result.add_claim(
        "An embedded privacy agent removes what each agent may not see while utility is unchanged (message level)",
        measured,
        "reproduced" if ok else "not reproduced",
    )
    if "TRL-trained SmolLM2" in table:
        tr, un = table["TRL-trained SmolLM2"], table["untrained SmolLM2"]
        good = tr["context_leakage"][0] < un["context_leakage"][0] and tr["leakage"][0] <= 0.05
        result.add_claim(
            "A model as the privacy agent (strong C_A backbone) keeps privacy high",
            f"context leakage untrained {un['context_leakage'][0]:.2f} -> TRL-trained {tr['context_leakage'][0]:.2f}, "
            f"value leakage {tr['leakage'][0]:.3f}, utility {tr['utility'][0]:.2f}",
            "reproduced" if good else "not at this size",
        )
    else:
        result.add_claim(
            "A model as the privacy agent (strong C_A backbone) keeps privacy high",
            f"135M rewriter, context leakage {before['context_leakage']:.2f} -> {after['context_leakage']:.2f} "
            "after 2 TRL steps on 1 message (see --full and benchmarks/results/epeagent.md)",
            "not at this size",
        )
    return result
