"""CoT-Kinetics against five baselines on SmolLM2-135M-Instruct reasoning chains (reasoning-gym).

    python examples/cot_kinetics_gsm.py --per-task 40 --max-new-tokens 96

Generates greedy step-by-step solutions for basic_arithmetic, chain_sum and gsm_symbolic problems, labels
each final number with the task's own scorer and prints the detection table (AUROC / AUPR / FPR@95).
"""

from __future__ import annotations

import argparse

import evaluate
import numpy as np
import torch

import hf_trust
from hf_trust import assets
from hf_trust.demo.recipes.cot_kinetics import TASKS, THINK_END, bootstrap_auroc, extract_answer, generate_chains


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-task", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lens-every", type=int, default=3, help="logit-lens every k-th layer")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = assets.load_smollm2()
    ds = assets.load_reasoning_tasks(TASKS, args.per_task, seed=args.seed)
    chains = generate_chains(model, tok, ds["question"], args.max_new_tokens)
    labels = [
        int(assets.score_reasoning(t, extract_answer(c[2]), e) >= 1.0)
        for c, t, e in zip(chains, ds["task"], ds["entry"])
    ]
    print(f"{len(labels)} samples, accuracy {np.mean(labels):.3f}")
    det = evaluate.load(hf_trust.metric_path("cot_kinetics"), "detection")
    out = det.compute(
        predictions=[c[2] or "-" for c in chains],
        token_ids=[c[1] for c in chains],
        prompt_ids=[c[0] for c in chains],
        references=labels,
        model=model,
        tokenizer=tok,
        think_start="",
        think_end=THINK_END,
        lens_layers=list(range(0, 31, args.lens_every)),
    )
    print(f"{'score':14s} AUROC  [95% bootstrap]  AUPR   FPR@95")
    for name, row in out["detection_table"].items():
        sign = {"cot_kinetics": -1.0, "perplexity": -1.0, "entropy": -1.0}.get(name, 1.0)
        col = out["energy"] if name == "cot_kinetics" else out["baselines"][name]
        lo, hi = bootstrap_auroc(sign * np.asarray(col), labels)
        print(f"{name:14s} {row['auroc']:.3f}  [{lo:.2f}, {hi:.2f}]     {row['aupr']:.3f}  {row['fpr_at_95']:.3f}")


if __name__ == "__main__":
    main()
