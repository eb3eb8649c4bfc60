"""Federated prompt learning with CLIP ViT-B/16 on a GPU (the study's setting), via ``accelerate launch``.

    # clients spread over the GPUs (rank r trains clients r, r+P, ...):
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/fpl_accelerate_clip.py \\
        --dataset cifar100 --kind both --beta 0.5 --clients 10 --rounds 50
    # every client as one DeepSpeed job over all GPUs (ZeRO-2 / ZeRO-3 configs):
    accelerate launch --config_file examples/accelerate_configs/deepspeed_zero2.yaml examples/fpl_accelerate_clip.py \\
        --execution deepspeed ...      (plain SGD, no VPTPR / diagnostics on this path)

Needs the Hub (``openai/clip-vit-base-patch16``) and the data set; the study's defaults: 16 + 16 prompt
tokens, SGD lr 1e-3 momentum 0.9 weight decay 5e-4, batch 32, 1 local epoch, weighted FedAvg.
"""

from __future__ import annotations

import argparse

import torch


def preprocess(processor, split):
    def tf(batch):
        out = processor(images=[im.convert("RGB") for im in batch["img"]], return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "label": batch["fine_label"]}

    return split.with_transform(tf)


def main() -> None:
    from accelerate import Accelerator
    from datasets import load_dataset
    from transformers import CLIPModel, CLIPProcessor

    from hf_trust.trainers.federated import DirichletLabelPartitioner, FedAvg, zero_dim_params_to_buffers
    from hf_trust.trainers.fpl import FederatedPromptTrainer, FPLConfig, PromptConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="openai/clip-vit-base-patch16")
    ap.add_argument("--dataset", default="cifar100")
    ap.add_argument("--kind", default="both", choices=["lpt", "vpt", "both"])
    ap.add_argument("--n-ctx", type=int, default=16)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--frac", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--aggregation", default="weight", choices=["weight", "equal"])
    ap.add_argument("--vptpr", action="store_true")
    ap.add_argument("--execution", default="clients_per_rank", choices=["clients_per_rank", "deepspeed"])
    ap.add_argument("--out", default="runs/fpl_clip")
    args = ap.parse_args()

    accelerator = Accelerator()
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    clip = CLIPModel.from_pretrained(args.model, torch_dtype=dtype).to(accelerator.device)
    zero_dim_params_to_buffers(clip)  # DeepSpeed cannot broadcast CLIP's 0-dim logit_scale parameter
    processor = CLIPProcessor.from_pretrained(args.model)
    raw = load_dataset(args.dataset)
    class_names = raw["train"].features["fine_label"].names
    train, test = preprocess(processor, raw["train"]), preprocess(processor, raw["test"])
    # split on the raw labels (no image decoding), then hand the clients the preprocessed view
    parts = DirichletLabelPartitioner(num_clients=args.clients, alpha=args.beta, min_size=10, seed=1).split(
        raw["train"], label_column="fine_label"
    )
    parts.dataset = train
    trainer = FederatedPromptTrainer(
        clip,
        class_names,
        prompt=PromptConfig(
            kind=args.kind,
            n_ctx_text=args.n_ctx,
            n_ctx_vision=args.n_ctx,
            depth_text=args.depth,
            depth_vision=args.depth,
        ),
        strategy=FedAvg(),
        config=FPLConfig(
            rounds=args.rounds,
            client_fraction=args.frac,
            aggregation=args.aggregation,
            vptpr=args.vptpr,
            output_dir=args.out,
            execution=args.execution,
        ),
        tokenizer=processor.tokenizer,
        eval_datasets={"test": test},
        accelerator=accelerator,
    )
    # the prompts stay float32 master weights; the frozen backbone may be bf16
    trainer.fit(parts)
    if accelerator.is_main_process:
        print(trainer.summary("eval_test_accuracy"))
        trainer.save_prompts(f"{args.out}/prompts")


if __name__ == "__main__":
    main()
