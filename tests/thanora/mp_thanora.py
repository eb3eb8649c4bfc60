"""Under ``accelerate launch``: ThanoRATrainer on two CPU processes; every rank saves its adapter weights."""

from __future__ import annotations

import sys

import torch

torch.set_num_threads(1)

from datasets import Dataset  # noqa: E402
from peft import get_peft_model  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

import hf_trust  # noqa: E402,F401
from hf_trust import ThanoRAConfig, ThanoRATrainer, preprocess_thanora  # noqa: E402
from tests.conftest import make_tiny_llama  # noqa: E402
from tests.thanora.test_thanora import llama_tasks  # noqa: E402


def main(out: str) -> None:
    torch.manual_seed(0)
    base = make_tiny_llama()
    cfg = ThanoRAConfig(
        task_names=["narrow", "wide"],
        r=6,
        lora_alpha=12,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "v_proj"],
        subspace_lambda=0.1,
    )
    preprocess_thanora(base, cfg, llama_tasks())
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(1)
    rows = [
        {"input_ids": (ids := torch.randint(0, 128, (12,), generator=g).tolist()), "labels": ids} for _ in range(16)
    ]
    args = TrainingArguments(
        out + ".run",
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
        ddp_backend="gloo",
    )
    trainer = ThanoRATrainer(model=model, args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    rank = trainer.accelerator.process_index
    torch.save(
        {
            "world": trainer.accelerator.num_processes,
            "state": state,
            "map": cfg.task_rank_map,
            "step": trainer.state.global_step,
        },
        f"{out}.{rank}",
    )


if __name__ == "__main__":
    main(sys.argv[1])
