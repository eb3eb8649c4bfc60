"""One prepared check of the GPU paths, for when a GPU machine is available (about 5 minutes on one GPU).

    python benchmarks/gpu_check.py            # every check, a table at the end; exit 1 if any failed
    python benchmarks/gpu_check.py --cpu      # the same code paths in fp32 on the CPU (no DeepSpeed rows)

Each check runs in its own subprocess (DeepSpeed ZeRO-3 patches module construction for the whole
process, and a failure in one check must not hide the others) on tiny models built from configs, so
nothing is downloaded. What runs:

* ThanoRA and LoRASculpt training steps in bf16 (``Trainer(bf16=True)``), then under DeepSpeed ZeRO-2 and
  ZeRO-3 on one GPU: LoRASculpt's mask must keep the configured share of every LoRA tensor, ThanoRA's
  regulariser must stay finite and positive;
* the federated core with ``execution="deepspeed"`` (ZeRO-2 and ZeRO-3) against the plain simulation (≤ 1e-4 in
  bf16-free fp32 SGD, as the CPU tests check at 1e-5);
* the CoT-Kinetics metric in bf16, BYE's per-layer attention entropies in bf16 against the same computation
  in fp32 on the CPU, and GGEUR's pooled covariance against an independent float64 recomputation on the
  device. ACGKD, federated prompt learning and EPEAgent have no row yet.

On a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

CHECKS: dict[str, Callable[[str, torch.dtype], dict[str, Any]]] = {}
DEEPSPEED_CHECKS = ("lorasculpt_zero2", "lorasculpt_zero3", "thanora_zero2", "thanora_zero3", "federated_zero2")
DEEPSPEED_CHECKS += ("federated_zero3",)


def check(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        CHECKS[name] = fn
        return fn

    return register


# ----------------------------------------------------------------------------------------------- tiny pieces
def _tiny_llama(device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype)


def _lm_data(n: int = 32, length: int = 16, seed: int = 0):
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (n, length), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def _zero_config(stage: int) -> dict[str, Any]:
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": stage},
    }


def _args(out: str, device: str, steps: int, bf16: bool, deepspeed: dict | None = None):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=device == "cpu",
        bf16=bf16,
        deepspeed=deepspeed,
        seed=0,
        disable_tqdm=True,
    )


def _lorasculpt_run(device: str, dtype: torch.dtype, stage: int | None) -> dict[str, Any]:
    from peft import get_peft_model

    import hf_trust  # noqa: F401  (registers the tuner types)
    from hf_trust import LoRASculptConfig, LoRASculptTrainer

    ratio = 0.1
    model = _tiny_llama(device, torch.float32 if stage else dtype)
    cfg = LoRASculptConfig(
        r=4, lora_alpha=8, target_modules="all-linear", preserve_ratio=ratio, mask_step=2, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, cfg)
    with tempfile.TemporaryDirectory() as out:
        args = _args(out, device, 4, dtype == torch.bfloat16, _zero_config(stage) if stage else None)
        trainer = LoRASculptTrainer(model=model, args=args, train_dataset=_lm_data())
        trainer.train()
        engine_model = trainer.model_wrapped if stage else trainer.model
    densities = []
    from peft.utils.integrations import gather_params_ctx

    for name, param in engine_model.named_parameters():
        if "lora_" in name and "default" in name:
            with gather_params_ctx(param):
                densities.append(float((param != 0).float().mean()))
    worst = max(abs(d - ratio) for d in densities)
    ok = bool(densities) and worst <= 0.5 * ratio + 1.0 / 16
    return {"ok": ok, "detail": f"{len(densities)} LoRA tensors, density {ratio} ± {worst:.3f}"}


def _thanora_run(device: str, dtype: torch.dtype, stage: int | None) -> dict[str, Any]:
    from peft import get_peft_model

    import hf_trust  # noqa: F401
    from hf_trust import ThanoRAConfig, ThanoRATrainer, preprocess_thanora

    model = _tiny_llama(device, torch.float32)
    cfg = ThanoRAConfig(task_names=["a", "b"], r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    batches = {
        t: [{"input_ids": torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(i)).to(device)}]
        for i, t in enumerate(cfg.task_names)
    }
    preprocess_thanora(model, cfg, task_batches=batches)
    model = get_peft_model(model, cfg)
    if not stage:
        model = model.to(dtype)
    with tempfile.TemporaryDirectory() as out:
        args = _args(out, device, 3, dtype == torch.bfloat16, _zero_config(stage) if stage else None)
        trainer = ThanoRATrainer(model=model, args=args, train_dataset=_lm_data())
        result = trainer.train()
    loss = float(result.training_loss)
    return {"ok": loss == loss and loss > 0, "detail": f"training loss {loss:.4f}"}


# ----------------------------------------------------------------------------------------------- the checks
@check("lorasculpt_bf16")
def _(device, dtype):
    return _lorasculpt_run(device, dtype, None)


@check("thanora_bf16")
def _(device, dtype):
    return _thanora_run(device, dtype, None)


for _stage in (2, 3):
    CHECKS[f"lorasculpt_zero{_stage}"] = lambda device, dtype, s=_stage: _lorasculpt_run(device, dtype, s)
    CHECKS[f"thanora_zero{_stage}"] = lambda device, dtype, s=_stage: _thanora_run(device, dtype, s)


def _federated_run(device: str, stage: int | None) -> dict[str, Any]:
    from accelerate import Accelerator
    from datasets import Dataset

    from hf_trust.trainers.federated import (
        DeepSpeedClientTrainer,
        DirichletLabelPartitioner,
        FedAvg,
        FederatedConfig,
        FederatedTrainer,
        SupervisedClientTrainer,
    )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    ds = Dataset.from_dict({"x": x.tolist(), "label": y.tolist()}).with_format("torch")
    parts = DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=5, seed=1).split(ds)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    cfg = dict(rounds=2, local_epochs=1, seed=0)
    plain = FederatedTrainer(SupervisedClientTrainer(model(), lr=0.05, batch_size=16), FedAvg(), FederatedConfig(**cfg))
    plain.fit(parts)
    acc = Accelerator(deepspeed_plugin=None) if stage is None else Accelerator()
    client = DeepSpeedClientTrainer(model(), acc, lr=0.05, batch_size=16)
    ds_trainer = FederatedTrainer(client, FedAvg(), FederatedConfig(execution="deepspeed", **cfg), accelerator=acc)
    ds_trainer.fit(parts)
    diff = max(
        float((plain.global_params[k] - ds_trainer.global_params[k].cpu()).abs().max()) for k in plain.global_params
    )
    return {"ok": diff <= 1e-4, "detail": f"max |ZeRO-{stage} − simulation| = {diff:.2e}"}


@check("federated_zero2")
def _(device, dtype):
    return _federated_run(device, 2)


@check("federated_zero3")
def _(device, dtype):
    return _federated_run(device, 3)


@check("cot_kinetics_bf16")
def _(device, dtype):
    import evaluate

    import hf_trust

    model = _tiny_llama(device, dtype)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(128)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="w0", pad_token="w1", eos_token="w2")
    metric = evaluate.load(hf_trust.metric_path("cot_kinetics"))
    preds = [" ".join(f"w{(7 * i + j) % 120 + 3}" for j in range(12)) for i in range(4)]
    out = metric.compute(predictions=preds, prompts=["w5 w6"] * 4, model=model, tokenizer=tok)
    energies = [float(e) for e in out["energy"]]
    finite = all(e == e and abs(e) != float("inf") for e in energies)
    return {"ok": finite, "detail": f"{len(energies)} energies on {device}/{dtype}"}


@check("ggeur_pooling")
def _(device, dtype):
    import numpy as np

    from hf_trust.trainers.ggeur import aggregate, client_statistics

    rng = np.random.default_rng(0)
    emb = [rng.normal(size=(60, 16)) + i for i in range(3)]
    labels = [rng.integers(0, 4, size=60) for _ in range(3)]
    pooled = aggregate([client_statistics(e, lab, client_id=k) for k, (e, lab) in enumerate(zip(emb, labels))], None)
    # independent recomputation on the device, in float64, from the concatenated rows
    z = torch.tensor(np.concatenate(emb), device=device, dtype=torch.float64)
    y = torch.tensor(np.concatenate(labels), device=device)
    worst = 0.0
    for c, cls in pooled.items():
        rows = z[y == c]
        cov = torch.cov(rows.T, correction=0).cpu().numpy()
        worst = max(worst, float(np.abs(cov - cls.cov).max()))
    return {"ok": worst < 1e-10, "detail": f"pooled covariance vs {device} recomputation: {worst:.1e}"}


@check("bye_bf16")
def _(device, dtype):
    import numpy as np

    from hf_trust.demo.studies import bye as toy
    from hf_trust.filters import BYEFilter

    ds = toy.make_dataset(16, 0.25, seed=0)

    def entropies(dev, dt):
        model = toy.make_tiny_llava(0).to(device=dev, dtype=dt)
        rows = BYEFilter(model, collate_fn=toy.collate, batch_size=8).entropies(ds)["bye_layer_entropy"]
        return np.asarray(rows, dtype=np.float64)

    ref = entropies("cpu", torch.float32)
    got = entropies(device, dtype)
    worst = float(np.abs(got - ref).max())
    # bf16 attention probabilities carry ~3 significant digits; entropies are in nats over 16 image tokens
    tol = 1e-4 if dtype == torch.float32 else 0.05
    return {"ok": worst <= tol, "detail": f"per-layer entropies vs CPU fp32: max |Δ| = {worst:.2e} nats"}


def run_one(name: str, cpu: bool) -> None:
    device = "cpu" if cpu else "cuda"
    dtype = torch.float32 if cpu else torch.bfloat16
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        result = CHECKS[name](device, dtype)
    except Exception as exc:  # the table reports it; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        result = {"ok": False, "detail": f"{type(exc).__name__}: {str(exc)[:160]}"}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print("RESULT " + json.dumps(result), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run the non-DeepSpeed checks in fp32 on the CPU")
    ap.add_argument("--check", help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", help="run only these checks")
    ap.add_argument("--timeout", type=int, default=150, help="seconds per check")
    args = ap.parse_args()
    if args.check:
        run_one(args.check, args.cpu)
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (run it where a GPU is available).")
        return 0
    names = args.only or [n for n in CHECKS if not (args.cpu and n in DEEPSPEED_CHECKS)]
    rows = []
    for name in names:
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
        cmd = [sys.executable, __file__, "--check", name] + (["--cpu"] if args.cpu else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            result = json.loads(line[7:]) if line else {"ok": False, "detail": proc.stderr.strip()[-160:]}
        except subprocess.TimeoutExpired:
            result = {"ok": False, "detail": f"timed out after {args.timeout} s", "seconds": args.timeout}
        rows.append((name, result))
        print(
            f"{name:<20} {'ok' if result['ok'] else 'FAILED':<7} {result.get('seconds', '-')!s:>6} s  {result['detail']}"
        )
    device = "CPU (fp32)" if args.cpu else torch.cuda.get_device_name(0) + " (bf16)"
    print(f"\n| check | result | seconds | detail |  device: {device}\n|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {'ok' if r['ok'] else 'FAILED'} | {r.get('seconds', '-')} | {r['detail']} |")
    return 0 if all(r["ok"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
