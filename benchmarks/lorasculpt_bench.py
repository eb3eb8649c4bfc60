"""LoRASculpt costs against PEFT LoRA at the same rank.

* train-step time (forward + backward + AdamW + regulariser + mask application) LoRASculpt / LoRA (goal ≤ 1.10×);
* merged-model inference time / base model (goal 1.00×);
* adapter size on disk: dense safetensors vs the non-zero entries only (what a sparse format would store).

Model: a Llama of SmolLM2's width with 4 layers (random weights; timing does not depend on values).
Run: ``python benchmarks/lorasculpt_bench.py``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

torch.set_num_threads(1)

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import hf_trust  # noqa: E402,F401
from hf_trust import LoRASculptConfig  # noqa: E402


def base():
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=4,
            num_attention_heads=9,
            num_key_value_heads=3,
        )
    )


def step_time(model, sculpt: bool, steps: int = 12):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 49152, (4, 64))
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        if sculpt:
            loss = loss + model.base_model.regularization_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sculpt:
            model.base_model.apply_masks()
        times.append(time.perf_counter() - t0)
        if sculpt and i == 1:
            model.base_model.compute_masks()
    return statistics.median(times[3:])


def infer_time(model, repeats: int = 7):
    ids = torch.randint(0, 49152, (4, 64))
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(input_ids=ids)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    cfg = dict(r=32, lora_alpha=64, target_modules="all-linear", task_type="CAUSAL_LM")
    ratios = []
    for _ in range(3):
        lora_t = step_time(get_peft_model(base(), LoraConfig(**cfg)), False)
        sculpt_model = get_peft_model(base(), LoRASculptConfig(preserve_ratio=0.05, mask_step=2, **cfg))
        sculpt_t = step_time(sculpt_model, True)
        ratios.append(sculpt_t / lora_t)
        print(
            f"train step: LoRA {lora_t * 1000:.0f} ms, LoRASculpt {sculpt_t * 1000:.0f} ms, ratio {sculpt_t / lora_t:.3f}x"
        )
    print(f"median train-step ratio {statistics.median(ratios):.3f}x over 3 repeats")
    plain = base().eval()
    merged = sculpt_model.merge_and_unload().eval()
    b, m = infer_time(plain), infer_time(merged)
    print(f"inference: base {b * 1000:.0f} ms, merged LoRASculpt {m * 1000:.0f} ms, ratio {m / b:.3f}x")
    sculpt_model = get_peft_model(base(), LoRASculptConfig(preserve_ratio=0.05, mask_step=2, **cfg))
    sculpt_model.base_model.compute_masks()
    with tempfile.TemporaryDirectory() as d:
        sculpt_model.save_pretrained(d)
        dense = os.path.getsize(os.path.join(d, "adapter_model.safetensors"))
    nnz = sum(int((f != 0).sum()) for a, b_, _ in sculpt_model.base_model.lora_factors().values() for f in (a, b_))
    sparse = nnz * (4 + 4)  # fp32 value + int32 index per kept entry
    print(
        f"adapter on disk: dense {dense / 2**20:.1f} MiB (incl. masks); non-zero entries as (value, index) {sparse / 2**20:.2f} MiB"
    )


if __name__ == "__main__":
    main()
