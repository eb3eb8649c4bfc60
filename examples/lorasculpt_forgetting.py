"""LoRASculpt vs LoRA on SmolLM2-135M-Instruct: learn one reasoning-gym task, measure forgetting.

    python examples/lorasculpt_forgetting.py --steps 60 --seed 0

Trains the same model twice on the same batches — plain LoRA with ``transformers.Trainer`` and LoRASculpt
with ``LoRASculptTrainer`` (dense warm-up, one-shot pruning to ρ of every LoRA factor, CMR regulariser) —
and prints, per arm, the answer NLL on held-out items of the trained task ("target") and the change of
answer NLL on other task families ("general"; positive = forgetting), plus the density of the adapter.
The demo recipe (``hf-trust demo --methods lorasculpt``) adds the matched-target control and the plot.
"""

from __future__ import annotations

import argparse
import copy
import tempfile

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from hf_trust import LoRASculptConfig, LoRASculptTrainer, assets

TARGET, GENERAL = "spell_backward", ["basic_arithmetic", "leg_counting", "chain_sum"]


def encode(tok, questions, answers, max_len=96):
    """Chat-formatted prompt + answer; the loss is on the answer tokens only."""
    rows = {"input_ids": [], "labels": []}
    for q, a in zip(questions, answers):
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        y = tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]
        rows["input_ids"].append((p + y)[-max_len:])
        rows["labels"].append(([-100] * len(p) + y)[-max_len:])
    return Dataset.from_dict(rows)


@torch.no_grad()
def answer_nll(model, data, collator):
    model.eval()
    total = count = 0.0
    for s in range(0, len(data), 8):
        batch = collator([data[i] for i in range(s, min(s + 8, len(data)))])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        total += float(torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="sum"))
        count += int((labels != -100).sum())
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-eval", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(1)

    base, tok = assets.load_smollm2()
    tgt = assets.load_reasoning_tasks([TARGET], args.n_train + args.n_eval, seed=0)
    gen = assets.load_reasoning_tasks(GENERAL, max(1, args.n_eval // len(GENERAL)), seed=1)
    train = encode(tok, tgt["question"][: args.n_train], tgt["answer"][: args.n_train])
    held_out = encode(tok, tgt["question"][args.n_train :], tgt["answer"][args.n_train :])
    general = encode(tok, gen["question"], gen["answer"])
    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    base_general = answer_nll(base, general, collator)
    print(f"base model: target NLL {answer_nll(base, held_out, collator):.3f}, general NLL {base_general:.3f}")

    common = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    arms = {
        "LoRA": (LoraConfig(**common), Trainer),
        # official ρ and λ; the mask step scaled to the run (a quarter of training, as in the recipe)
        "LoRASculpt": (
            LoRASculptConfig(**common, preserve_ratio=0.1, mask_step=max(1, args.steps // 4), cmr_lambda=1e-3),
            LoRASculptTrainer,
        ),
    }
    for name, (config, trainer_cls) in arms.items():
        torch.manual_seed(args.seed)
        model = get_peft_model(copy.deepcopy(base), config)
        with tempfile.TemporaryDirectory() as out:
            targs = TrainingArguments(
                output_dir=out,
                max_steps=args.steps,
                per_device_train_batch_size=4,
                learning_rate=1e-3,
                weight_decay=0.0,
                report_to=[],
                save_strategy="no",
                logging_strategy="no",
                use_cpu=True,
                seed=args.seed,
                data_seed=args.seed,
                disable_tqdm=True,
            )
            trainer_cls(model=model, args=targs, train_dataset=train, data_collator=collator).train()
        a, b, _ = next(iter(model.base_model.lora_factors().values())) if name == "LoRASculpt" else (None,) * 3
        density = "" if a is None else f", density A {float((a != 0).float().mean()):.3f}"
        print(
            f"{name}: target NLL {answer_nll(model, held_out, collator):.3f}, "
            f"general NLL − base {answer_nll(model, general, collator) - base_general:+.3f}{density}"
        )


if __name__ == "__main__":
    main()
