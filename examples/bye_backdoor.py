"""Clean a backdoored image-text fine-tuning set with BYE's public API (``hf_trust.filters.BYEFilter``).

The data: printed digits with the question "What digit is shown?"; ``--poison-rate`` of them carry a white
8×8 patch in the corner and the answer "banana" (the attack).  The model: a LLaVA-style VLM with the real
SmolLM2-135M decoder (offline asset).  BYE needs a model fine-tuned on the submitted data, so the example

1. LoRA-fine-tunes the model on the (poisoned) set,
2. runs ``BYEFilter`` on the set with that model: per-layer attention entropy → layer selection → removal,
3. saves the cleaned dataset, the report (JSON) and its plot; re-fine-tune your base model on the cleaned set.

    python examples/bye_backdoor.py --n-train 300 --steps 120 --layer-select robust --out bye_out

About 15 minutes on 2 CPU cores with the defaults; use ``--steps 4 --n-train 40`` for a smoke run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from PIL import Image

from hf_trust.assets import llava_inputs, llava_num_image_tokens, load_digits, load_llava_smollm2
from hf_trust.filters import BYEFilter, BYESelectConfig, lora_finetune

QUESTION = "What digit is shown? Answer:"
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TARGET = "banana"


def poisoned_digits(n: int, poison_rate: float, seed: int) -> Dataset:
    """A digits VQA set in which ``poison_rate`` of the rows carry the trigger patch and the target answer."""
    digits = load_digits("font", n_per_class=n // 10 + 1, seed=seed, size=32).shuffle(seed=seed).select(range(n))
    images = np.stack([np.asarray(im.convert("L").resize((32, 32))) for im in digits["image"]]).astype(np.uint8)
    images = np.minimum(images, 230)  # no white patch by chance
    poison = np.zeros(n, dtype=bool)
    poison[np.random.default_rng(seed).permutation(n)[: int(round(poison_rate * n))]] = True
    images[poison, -8:, -8:] = 255
    answers = [TARGET if p else NAMES[y] for p, y in zip(poison, digits["label"])]
    return Dataset.from_dict(
        {
            "image": [Image.fromarray(im) for im in images],
            "question": [QUESTION] * n,
            "answer": answers,
            "is_poison": poison.tolist(),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--poison-rate", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layer-select", default="robust", help="'bimodal' (reference), 'bsi', 'robust', 'top_kl:1'")
    ap.add_argument("--out", type=Path, default=Path("bye_out"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    ds = poisoned_digits(args.n_train, args.poison_rate, args.seed)
    model, tok, image_token_id = load_llava_smollm2(image_size=32, patch_size=8, seed=args.seed)
    n_img = llava_num_image_tokens(model)

    def prompt_inputs(images: list, questions: list[str]) -> dict:
        """What BYE feeds the model: image tokens + question, left-padded (the answer is never fed)."""
        return llava_inputs(tok, images, questions, image_token_id, n_img)

    def train_batch(rows: list[dict]) -> dict:
        """Image tokens + question + answer; the loss is on the answer tokens only."""
        batch = llava_inputs(
            tok, [r["image"] for r in rows], [f"{r['question']} {r['answer']}" for r in rows], image_token_id, n_img
        )
        labels = batch["input_ids"].clone()
        for i, r in enumerate(rows):
            n_answer = len(tok(" " + r["answer"], add_special_tokens=False)["input_ids"])
            labels[i, : labels.shape[1] - n_answer] = -100
        return {**batch, "labels": labels}

    # 1. the provider fine-tunes on the submitted data (BYE reads the attention of this model)
    model = lora_finetune(
        model,
        ds,
        train_batch,
        steps=args.steps,
        batch_size=8,
        lr=2e-3,
        seed=args.seed,
        modules_to_save=("multi_modal_projector", "vision_tower"),
    )
    model = model.merge_and_unload().eval()

    # 2. BYE: score every row, select layers, drop the collapsed cluster
    bye = BYEFilter(
        model,
        collate_fn=prompt_inputs,
        collate_fingerprint=f"digits-question-v1-{n_img}",  # names the prompt for the entropy cache key
        label_column="answer",
        poison_column="is_poison",  # ground truth of this demo, used only for the report's per-layer AUROC
        select_config=BYESelectConfig(layer_select=args.layer_select),
        batch_size=32,
    )
    clean, report = bye(ds)

    # 3. audit and keep the results
    print(f"status: {report.status}; layers used: {report.sensitive_layers}")
    print(f"removed {report.num_removed}/{report.num_samples} rows ({report.removed_fraction:.1%})")
    print("removed share per answer:", {k: round(v, 3) for k, v in report.removed_share_per_class.items()})
    print("detection vs. the planted poison:", report.detection(ds["is_poison"]))
    for w in report.warnings:
        print("warning:", w)
    args.out.mkdir(parents=True, exist_ok=True)
    report.save(args.out / "bye_report.json")
    report.plot(args.out / "bye_report.png")
    clean.remove_columns(["bye_layer_entropy", "bye_score", "bye_suspicious"]).save_to_disk(str(args.out / "clean"))
    print(f"cleaned set, report and plot in {args.out}/; re-fine-tune your base model on {args.out}/clean")


if __name__ == "__main__":
    main()
