"""ThanoRA on SmolLM2-135M-Instruct with a reasoning-gym task mixture, through the ``Trainer`` API.

    python examples/thanora_multitask.py --steps 30 --out runs/thanora

ThanoRA vs LoRA at equal r is the demo recipe (``hf-trust demo --methods thanora [--full]``); the ablation and
PEFT peers are ``benchmarks/thanora_ablation.py``.

Flow: per-task preview batches → ``preprocess_thanora`` (rank split, cooperative block, covariance init) →
``get_peft_model`` → ``ThanoRATrainer`` on the shuffled mixture (no task ids) → allocation table →
save, export as a stock LoRA adapter, merge.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

#: Heterogeneous in input and output: word reversal (characters), arithmetic (digits), counting (story).
TASKS = ("spell_backward", "basic_arithmetic", "leg_counting")


def encode(tok, rows, max_len: int = 96):
    """Chat-formatted (question, answer) → (input ids, labels on the answer tokens only)."""
    out = []
    for q, a in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]
        out.append(((p_ids + a_ids)[-max_len:], ([-100] * len(p_ids) + a_ids)[-max_len:]))
    return out


def preview_batch(examples, pad_id):
    """Right-padded calibration batch (padding is excluded from ThanoRA's statistics by the mask)."""
    width = max(len(i) for i, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, (i, _) in enumerate(examples):
        ids[r, : len(i)] = torch.tensor(i)
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def train_with_trainer(args) -> None:
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    from hf_trust import ThanoRAConfig, ThanoRATrainer, assets, preprocess_thanora
    from hf_trust.peft_tuners.thanora import format_allocation

    model, tok = assets.load_smollm2()
    pad = tok.pad_token_id
    rows, calib = [], {}
    for t in TASKS:
        ds = assets.load_reasoning_tasks([t], args.n_train + 8, seed=args.seed)
        enc = encode(tok, list(zip(ds["question"], ds["answer"])))
        rows += [{"input_ids": i, "labels": lab, "task": t} for i, lab in enc[: args.n_train]]
        calib[t] = [preview_batch(enc[args.n_train :][s : s + 4], pad) for s in (0, 4)]
    config = ThanoRAConfig(
        task_names=list(TASKS),
        r=args.r,
        lora_alpha=2 * args.r,
        lora_dropout=0.05,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        calib_tokens_per_task=512,
    )
    preprocess_thanora(model, config, calib, seed=args.seed)
    model = get_peft_model(model, config)
    print(format_allocation(model.base_model.allocation_report()))
    training = TrainingArguments(
        args.out,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=args.seed,
    )
    trainer = ThanoRATrainer(
        model=model,
        args=training,
        train_dataset=Dataset.from_list(rows).shuffle(seed=args.seed),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True),
    )
    trainer.train()
    print("cross-block |cos|:", model.base_model.cross_block_cosine())
    model.save_pretrained(Path(args.out) / "thanora_adapter")
    model.base_model.export_as_lora(Path(args.out) / "lora_adapter")  # loads with plain peft, no hf_trust import
    merged = model.merge_and_unload()
    merged.save_pretrained(Path(args.out) / "merged")
    print("saved adapter, stock-LoRA export and merged model under", args.out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--r", type=int, default=12)
    ap.add_argument("--out", default="runs/thanora")
    args = ap.parse_args()
    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    train_with_trainer(args)


if __name__ == "__main__":
    main()
