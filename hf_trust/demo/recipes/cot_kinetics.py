"""CoT-Kinetics on real generations: SmolLM2-135M-Instruct solving reasoning-gym problems.

The model writes a step-by-step solution; the task's own scorer labels the final number; the detection
table compares the (reconstructed) CoT-Kinetics energy with MaxProb, perplexity, entropy, CoE-R and CoE-C
on the same generations, with a bootstrap interval on AUROC.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe

TASKS = ("basic_arithmetic", "chain_sum", "gsm_symbolic")
PREFIX = "Let's think step by step."
THINK_END = "The answer is"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str) -> Optional[str]:
    """The number after the last "The answer is", else the last number in the text."""
    tail = text.rsplit(THINK_END, 1)[-1] if THINK_END in text else text
    nums = _NUMBER.findall(tail) or _NUMBER.findall(text)
    return nums[-1] if nums else None


def generate_chains(model, tok, questions, max_new_tokens: int, batch_size: int = 8, progress=None):
    """Greedy chains; returns (prompt ids, generated ids, decoded text) per question."""
    import torch

    tok.padding_side = "left"
    prompts = []
    for q in questions:
        msgs = [
            {"role": "system", "content": f"Solve the problem step by step, then end with '{THINK_END} <number>.'"},
            {"role": "user", "content": q},
        ]
        text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) + PREFIX
        prompts.append(text)
    out = []
    batches = range(0, len(prompts), batch_size)
    for s in progress(batches, desc="generating") if progress else batches:
        enc = tok(prompts[s : s + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for i in range(len(gen)):
            prompt_ids = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
            new = gen[i, enc["input_ids"].shape[1] :].tolist()
            new = [t for t in new if t != tok.pad_token_id]
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id)]
            out.append((prompt_ids, new or [tok.eos_token_id], tok.decode(new, skip_special_tokens=True)))
    return out


def bootstrap_auroc(score, labels, n: int = 500, seed: int = 0) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    score, labels = np.asarray(score), np.asarray(labels)
    vals = []
    for _ in range(n):
        ix = rng.integers(0, len(labels), len(labels))
        if len(set(labels[ix])) == 2:
            vals.append(roc_auc_score(labels[ix], score[ix]))
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


@register_recipe("cot_kinetics", title="CoT-Kinetics vs five baselines on SmolLM2 reasoning chains", minutes=2.0)
def run(ctx: RecipeContext) -> RecipeResult:
    import evaluate

    import hf_trust
    from hf_trust import assets
    from hf_trust.metrics.cot_kinetics.kinetics import BASELINE_DIRECTION

    result = RecipeResult()
    per_task = 40 if ctx.full else 8
    max_new = 96 if ctx.full else 48
    lens_layers = list(range(0, 31, 3)) if ctx.full else [10, 20, 30]
    model, tok = assets.load_smollm2()
    ds = assets.load_reasoning_tasks(TASKS, per_task, seed=ctx.seeds[0])
    chains = generate_chains(model, tok, ds["question"], max_new, progress=ctx.progress)
    labels = [
        int(assets.score_reasoning(t, extract_answer(text), e) >= 1.0)
        for (_, _, text), t, e in zip(chains, ds["task"], ds["entry"])
    ]
    det = evaluate.load(hf_trust.metric_path("cot_kinetics"), "detection")
    kwargs = dict(
        predictions=[c[2] or "-" for c in chains],
        token_ids=[c[1] for c in chains],
        prompt_ids=[c[0] for c in chains],
        model=model,
        tokenizer=tok,
        think_start="",
        think_end=THINK_END,
        lens_layers=lens_layers,
        batch_size=4,
    )
    n, acc = len(labels), float(np.mean(labels))
    result.add("SmolLM2-135M, " + "+".join(TASKS), "answer accuracy", acc, n=n)
    if 0 < sum(labels) < n:
        out = det.compute(references=labels, **kwargs)
        for name, row in out["detection_table"].items():
            sign = 1.0 if name == "cot_kinetics" else BASELINE_DIRECTION[name]
            score = -np.asarray(out["energy"]) if name == "cot_kinetics" else sign * np.asarray(out["baselines"][name])
            lo, hi = bootstrap_auroc(score, labels)
            result.add(name, "AUROC", row["auroc"], n=n, note=f"95% bootstrap [{lo:.2f}, {hi:.2f}]")
            result.add(name, "AUPR", row["aupr"], n=n)
            result.add(name, "FPR@95", row["fpr_at_95"], n=n)
        statuses = out["segment_status"]
        result.note(
            f"segments: {statuses.count('ok')} ended with '{THINK_END}', "
            f"{statuses.count('no_think_end')} were scored whole (no end marker)."
        )
    else:
        result.note(f"all {n} answers were {'correct' if sum(labels) else 'wrong'}: no detection table.")
    result.note(
        "The energy is the project's reconstruction of the paper's equation (its method section was "
        "not available); logit-lens layers " + str(lens_layers) + "."
    )
    return result
