"""CoT-Kinetics against five baselines on SmolLM2-135M-Instruct's own reasoning chains (reasoning-gym).

    python examples/cot_kinetics_gsm.py --n 48 --task chain_sum

Generates one greedy step-by-step answer per problem (one at a time, so no padding is involved), labels
the final number with the task's own scorer, and prints the detection table (AUROC / AUPR / FPR@95) of
the CoT-Kinetics energy, each of its terms and the baselines on the same generations.
"""

from __future__ import annotations

import argparse
import re

import evaluate
import numpy as np
import torch

import hf_trust
from hf_trust import assets

MARKER = "The answer is"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48, help="problems")
    ap.add_argument("--task", default="basic_arithmetic")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = assets.load_smollm2()
    ds = assets.load_reasoning_tasks([args.task], args.n, seed=args.seed)
    prompts, outputs, labels = [], [], []
    for q, entry in zip(ds["question"], ds["entry"]):
        msgs = [
            {"role": "system", "content": f"Solve the problem step by step, then end with '{MARKER} <number>.'"},
            {"role": "user", "content": q},
        ]
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**prompt, max_new_tokens=args.max_new_tokens, do_sample=False)
        new = gen[0, prompt["input_ids"].shape[1] :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        text = tok.decode(new, skip_special_tokens=True)
        tail = text.rsplit(MARKER, 1)[-1]
        nums = re.findall(r"-?\d+(?:\.\d+)?", tail) or re.findall(r"-?\d+(?:\.\d+)?", text)
        prompts.append(prompt["input_ids"][0].tolist())
        outputs.append(new or [tok.eos_token_id])
        labels.append(int(assets.score_reasoning(args.task, nums[0] if nums else None, entry) >= 1.0))
    print(f"{len(labels)} samples, accuracy {np.mean(labels):.3f}")
    if not 0 < sum(labels) < len(labels):
        print("all answers were scored alike: no detection table")
        return
    det = evaluate.load(hf_trust.metric_path("cot_kinetics"), "detection")
    out = det.compute(
        predictions=["-"] * len(outputs),
        token_ids=outputs,
        prompt_ids=prompts,
        references=labels,
        model=model,
        tokenizer=tok,
        think_start="",
        think_end=MARKER,
    )
    print(f"{'score':14s} AUROC   AUPR   FPR@95")
    for name, row in out["detection_table"].items():
        print(f"{name:14s} {row['auroc']:.3f}   {row['aupr']:.3f}  {row['fpr_at_95']:.3f}")


if __name__ == "__main__":
    main()
