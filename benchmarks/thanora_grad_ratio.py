"""ThanoRA's gradient balance on a tiny random Qwen2: ‖∇ regulariser‖ / ‖∇ task loss‖ per AdamW step.

Compares the B term on plain columns (the default) with the earlier unit-column form (``normalize_B=True``),
whose gradient scales like 1/‖b‖ while B is near its zero init.  Same setting as
``tests/thanora/test_thanora_grad_balance.py`` (2 layers, d = 32, all-linear, r = 8, default config), over more
steps and drawn for two learning rates::

    python benchmarks/thanora_grad_ratio.py --seeds 0 1 2 3 4 --steps 12
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from peft import get_peft_model  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

import hf_trust  # noqa: E402,F401
from hf_trust import ThanoRAConfig, preprocess_thanora  # noqa: E402
from hf_trust.atomic import atomic_save, atomic_write_json  # noqa: E402

FORMS = {"plain B columns (default)": False, "unit B columns (earlier, normalize_B=True)": True}


def curve(seed: int, lr: float, steps: int, normalize_B: bool) -> list[float]:
    g = torch.Generator().manual_seed(seed)

    def batches(hi: int) -> list[dict]:
        return [
            {
                "input_ids": torch.randint(0, hi, (4, 16), generator=g),
                "attention_mask": torch.ones(4, 16, dtype=torch.long),
            }
            for _ in range(2)
        ]

    tasks = {"narrow": batches(6), "wide": batches(64)}
    qcfg = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qcfg)
    cfg = ThanoRAConfig(
        task_names=list(tasks),
        r=8,
        lora_alpha=16,
        task_type="CAUSAL_LM",
        target_modules="all-linear",
        normalize_B=normalize_B,
    )
    preprocess_thanora(model, cfg, tasks, seed=seed)
    model = get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    data = tasks["narrow"] + tasks["wide"]
    out = []
    for s in range(steps):
        batch = data[s % len(data)]
        task = model(**batch, labels=batch["input_ids"]).loss
        out.append(model.base_model.gradient_norms(task)["ratio"])
        loss = task + model.base_model.regularization_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-3])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--json", default="/tmp/thanora_grad_ratio.json")
    args = ap.parse_args()
    import matplotlib.pyplot as plt

    results = {
        f"{name} @ lr {lr}": [curve(s, lr, args.steps, nb) for s in args.seeds]
        for lr in args.lrs
        for name, nb in FORMS.items()
    }
    atomic_write_json(args.json, {"args": vars(args), "curves": results})
    fig, axes = plt.subplots(1, len(args.lrs), figsize=(5 * len(args.lrs), 3.8), sharey=True)
    floor = 1e-12  # step 1 has B = 0, where both forms give 0
    for ax, lr in zip(np.atleast_1d(axes), args.lrs):
        for k, name in enumerate(FORMS):
            curves = np.array(results[f"{name} @ lr {lr}"])
            c = f"C{k}"
            for y in curves:
                ax.plot(range(1, args.steps + 1), np.maximum(y, floor), color=c, alpha=0.3, lw=0.8)
            med = np.median(curves, axis=0)
            ax.plot(range(1, args.steps + 1), np.maximum(med, floor), color=c, lw=2, label=name)
            print(f"lr {lr} {name}: worst per seed {[f'{v:.3g}' for v in curves.max(1)]}")
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"AdamW lr {lr}, {len(args.seeds)} seeds (median bold)", fontsize=9)
        ax.set_xlabel("optimizer step")
    np.atleast_1d(axes)[0].set_ylabel("‖∇ regulariser‖ / ‖∇ task loss‖")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("ThanoRA gradient balance, tiny random Qwen2 (2 layers, d = 32, r = 8, λ = 1e-2)", fontsize=10)
    fig.tight_layout()
    path = Path(args.out) / "thanora_grad_ratio_tiny.png"
    atomic_save(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    main()
