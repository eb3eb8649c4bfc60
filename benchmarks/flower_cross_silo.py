"""Flower's Simulation Engine on a cross-silo workload: the engine's overhead when local training is real.

5 clients, each fine-tuning LoRA adapters (r = 8 on q/v) of the real SmolLM2-135M-Instruct (offline asset) for 10
local steps (40 token sequences of 32 tokens per client, batch 4, one epoch, SGD) per round, FedAvg, 2 rounds (a round
takes minutes on one CPU thread).  The same federation runs on the in-process ``FederatedTrainer`` (one thread) and
on ``FlowerFederation`` in the Simulation Engine with one virtual-client worker of 2 CPUs (torch still on one thread:
the same compute as in-process, so the ratio is the engine's overhead); ``--cpus-per-client 1`` adds two workers of
1 CPU (two clients train at once).  Median round time over rounds 2..R (round 1 also warms up), ratio Flower /
in-process; goal ≤ 1.10× with one worker.  The
100-tiny-client figure of ``flower_bench.py`` stays the engine's fixed cost.

Writes the section between the ``crosssilo`` markers of ``benchmarks/results/flower.md``.

Run: ``python benchmarks/flower_cross_silo.py [--rounds 2] [--clients 5] [--steps 10] [--cpus-per-client 2 1]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

for _k, _v in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from hf_trust.trainers.federated import (  # noqa: E402
    FedAvg,
    FederatedConfig,
    FederatedTrainer,
    IIDPartitioner,
    SupervisedClientTrainer,
)

HERE = Path(__file__).resolve().parent
SEQ_LEN, BATCH = 32, 4


def lm_loss(model, input_ids, labels):
    out = model(input_ids=input_ids, labels=labels)
    return out.loss, out.logits


def lora_trainer(seed: int = 0) -> SupervisedClientTrainer:
    """SmolLM2-135M with fresh LoRA adapters (the same initial adapters for every engine: seeded)."""
    from peft import LoraConfig, get_peft_model

    from hf_trust.assets import load_smollm2

    base, _ = load_smollm2()
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    return SupervisedClientTrainer(
        model,
        lr=1e-3,
        batch_size=BATCH,
        input_column="input_ids",
        label_column="input_ids",
        batch_to_inputs=lambda b: (torch.as_tensor(b["input_ids"]),) * 2,
        loss_fn=lm_loss,
    )


def token_data(n_clients: int, steps: int, vocab: int, seed: int = 0):
    """``steps * BATCH`` sequences per client; tokens drawn from a seeded Zipf-like distribution over the vocabulary
    (a timing workload: the arithmetic, not the text, is what both engines must do alike)."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    n = n_clients * steps * BATCH
    p = 1.0 / np.arange(1, vocab + 1)
    ids = rng.choice(vocab, size=(n, SEQ_LEN), p=p / p.sum())
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "label": [0] * n})  # IID split; the label is unused
    return IIDPartitioner(num_clients=n_clients, seed=seed).split(ds)


def bench(n_clients: int, steps: int, rounds: int, cpus_per_client: tuple[float, ...] = (2.0,)) -> dict:
    from hf_trust.trainers.federated.flower import FlowerFederation, default_backend_config, run_simulations

    cfg = FederatedConfig(rounds=rounds, seed=0)
    ref_trainer = lora_trainer()
    parts = token_data(n_clients, steps, ref_trainer.model.config.vocab_size)
    t0 = time.perf_counter()
    ref = FederatedTrainer(ref_trainer, FedAvg(), cfg)
    ref.fit(parts)
    in_proc = [r["seconds"] for r in ref.history]
    rows = {"in_process": in_proc, "in_process_wall_s": time.perf_counter() - t0}
    for cpus in cpus_per_client:
        fed = FlowerFederation(lora_trainer(), FedAvg(), cfg)
        t0 = time.perf_counter()
        run_simulations([(fed, parts)], backend_config=default_backend_config(cpus))
        wall = time.perf_counter() - t0
        diff = max(float((fed.global_params[k] - ref.global_params[k]).abs().max()) for k in ref.global_params)
        rows[cpus] = {
            "rounds_s": [r["seconds"] for r in fed.history],
            "startup_s": fed.timings["handshake_seconds"],
            "wall_s": wall,
            "max_abs_diff": diff,
        }
    return rows


def report(res: dict, args) -> str:
    med_in = statistics.median(res["in_process"][1:])
    load = os.getloadavg()
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; python {sys.version.split()[0]}, flwr "
        f"{__import__('flwr').__version__}, ray {__import__('ray').__version__}, torch {torch.__version__}. "
        f"{args.clients} clients × SmolLM2-135M-Instruct LoRA (r = 8, q/v; {args.steps} local steps of "
        f"{BATCH}×{SEQ_LEN} tokens), FedAvg, {args.rounds} rounds, medians over rounds 2..{args.rounds}.",
        "",
        "| engine | round times (s) | median round | ratio to in-process | Ray start-up + handshake "
        "| max abs diff vs in-process |",
        "|---|---|---|---|---|---|",
        f"| in-process `FederatedTrainer`, 1 thread | {', '.join(f'{s:.1f}' for s in res['in_process'])} "
        f"| {med_in:.1f} s | 1.00× | – | – |",
    ]
    for cpus, label in ((2.0, "1 worker of 2 CPUs (same compute)"), (1.0, "2 workers of 1 CPU")):
        if cpus not in res:
            continue
        r = res[cpus]
        med = statistics.median(r["rounds_s"][1:])
        lines.append(
            f"| Flower simulation, {label} | {', '.join(f'{s:.1f}' for s in r['rounds_s'])} | {med:.1f} s "
            f"| **{med / med_in:.2f}×** | {r['startup_s']:.1f} s | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--cpus-per-client",
        type=float,
        nargs="+",
        default=[2.0],
        help="Ray CPUs per virtual client: 2 = one worker (the in-process compute), 1 = two clients at once",
    )
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    md = report(bench(args.clients, args.steps, args.rounds, tuple(args.cpus_per_client)), args)
    print(md)
    if not args.no_write:
        sys.path.insert(0, str(HERE))
        from flower_robustness import write_section

        write_section(md, "crosssilo")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
