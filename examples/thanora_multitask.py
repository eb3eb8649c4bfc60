"""ThanoRA on SmolLM2-135M-Instruct with a reasoning-gym task mixture, through the ``Trainer`` API.

    python examples/thanora_multitask.py --steps 30 --out runs/thanora
    python examples/thanora_multitask.py --compare --seeds 0 1 2     # ThanoRA vs LoRA (the demo's --full setting)

Flow: per-task calibration batches → ``preprocess_thanora`` (rank split + task-subspace init) →
``get_peft_model`` → ``ThanoRATrainer`` on the shuffled mixture (no task ids) → allocation table →
save, export as a stock LoRA adapter, merge.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def train_with_trainer(args) -> None:
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    from hf_trust import ThanoRAConfig, ThanoRATrainer, assets, preprocess_thanora
    from hf_trust.demo.recipes.thanora import TASKS, collate, encode
    from hf_trust.peft_tuners.thanora.report import format_allocation

    model, tok = assets.load_smollm2()
    pad = tok.pad_token_id
    rows, calib = [], {}
    for t in TASKS:
        ds = assets.load_reasoning_tasks([t], args.n_train + 8, seed=args.seed)
        enc = encode(tok, list(zip(ds["question"], ds["answer"])))
        rows += [{"input_ids": i, "labels": l, "task": t} for i, l, _ in enc[: args.n_train]]
        calib[t] = [collate(enc[args.n_train :][s : s + 4], pad) for s in (0, 4)]
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


def compare(args) -> None:
    from hf_trust.demo import RecipeContext
    from hf_trust.demo.recipes import thanora
    from hf_trust.demo.runner import format_table

    result = thanora.run(RecipeContext(out_dir=Path(args.out), full=not args.quick, seeds=args.seeds))
    print(format_table({"thanora": result}))
    for note in result.notes:
        print("-", note)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", action="store_true", help="ThanoRA vs LoRA at equal r/steps/data (the demo recipe)")
    ap.add_argument("--quick", action="store_true", help="with --compare: the demo's short setting")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--r", type=int, default=12)
    ap.add_argument("--out", default="runs/thanora")
    args = ap.parse_args()
    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    compare(args) if args.compare else train_with_trainer(args)


if __name__ == "__main__":
    main()
