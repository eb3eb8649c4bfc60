"""ThanoRA costs against PEFT LoRA at the same rank.

* train-step time (forward + backward + AdamW, ThanoRA adds its regulariser) ThanoRA / LoRA (goal ≤ 1.10×);
* merged-model inference time / base model (goal 1.00×);
* preprocessing time per target layer (activation and gradient statistics).

Model: a Llama of SmolLM2-135M's width (576 hidden, 1536 MLP) with 4 layers, random weights (timings do not
depend on values), all linear layers targeted, r = 16.  Steps alternate between the arms; the median is reported.
Run: ``python benchmarks/thanora_bench.py [--repeats 5 --steps 10]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

torch.set_num_threads(1)

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import hf_trust  # noqa: E402,F401
from hf_trust import ThanoRAConfig, preprocess_thanora  # noqa: E402

TASKS = ["a", "b", "c"]


def base():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=2048,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


def batch(seed=0, lo=0, hi=2048, bs=4, seq=64):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(lo, hi, (bs, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def calib():
    return {t: [batch(10 + i, 0, 64 * (i + 1) ** 2)] for i, t in enumerate(TASKS)}


def _step(model, opt, b, thanora: bool) -> float:
    t0 = time.perf_counter()
    loss = model(**b).loss
    if thanora:
        loss = loss + model.base_model.regularization_loss()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def paired_step_times(lora, thanora, steps: int) -> tuple[float, float]:
    """Median step time of each arm, steps alternating LoRA / ThanoRA so that a change of machine load
    during the measurement hits both arms alike."""
    b = batch(1)
    arms = [(lora, False), (thanora, True)]
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m, _ in arms]
    for m, _ in arms:
        m.train()
    times: list[list[float]] = [[], []]
    for i in range(steps + 2):
        for k, (m, th) in enumerate(arms):
            t = _step(m, opts[k], b, th)
            if i >= 2:  # warm-up
                times[k].append(t)
    return statistics.median(times[0]), statistics.median(times[1])


def infer_time(model, reps: int = 10) -> float:
    b = batch(2)
    b.pop("labels")
    with torch.no_grad():
        model(**b)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(**b)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--r", type=int, default=16)
    args = ap.parse_args()
    m0 = base()
    common = dict(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    ratios, merged_ratios, pre = [], [], {"activation": [], "gradient": []}
    for rep in range(args.repeats):
        lora = get_peft_model(copy.deepcopy(m0), LoraConfig(**common))
        for stat in ("activation", "gradient"):
            m = copy.deepcopy(m0)
            cfg = ThanoRAConfig(task_names=TASKS, allocation_statistic=stat, calib_tokens_per_task=256, **common)
            t0 = time.perf_counter()
            preprocess_thanora(m, cfg, calib())
            pre[stat].append((time.perf_counter() - t0) / len(cfg.task_rank_map))
        thanora = get_peft_model(m, cfg)
        t_lora, t_th = paired_step_times(lora, thanora, args.steps)
        ratios.append(t_th / t_lora)
        sizes = (
            sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n),
            sum(p.numel() for n, p in thanora.named_parameters() if "lora_" in n),
        )
        merged = thanora.merge_and_unload()
        t_base, t_merged = infer_time(m0), infer_time(merged)
        merged_ratios.append(t_merged / t_base)
        print(
            f"repeat {rep}: step LoRA {t_lora * 1e3:.1f} ms, ThanoRA {t_th * 1e3:.1f} ms (×{ratios[-1]:.3f}); "
            f"inference base {t_base * 1e3:.1f} ms, merged {t_merged * 1e3:.1f} ms (×{merged_ratios[-1]:.3f})"
        )
    fmt = lambda v: f"median {statistics.median(v):.3f} (min {min(v):.3f}, max {max(v):.3f}, n={len(v)})"  # noqa: E731
    print(f"train-step time ThanoRA / LoRA (r={args.r}, all-linear, 3 tasks): {fmt(ratios)}   goal ≤ 1.10")
    print(f"merged inference time / base: {fmt(merged_ratios)}   goal 1.00")
    for stat, v in pre.items():
        print(
            f"preprocessing ({stat}, 3 tasks × 1 batch of 4×64 tokens) per layer: "
            f"{statistics.median(v) * 1e3:.1f} ms (min {min(v) * 1e3:.1f}, max {max(v) * 1e3:.1f})"
        )
    print(f"adapter params LoRA {sizes[0]}, ThanoRA {sizes[1]}")


if __name__ == "__main__":
    main()
