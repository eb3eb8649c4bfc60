"""GGEUR's label-skew table (benchmarks/results/ggeur.md) at a chosen number of local epochs.

The same protocol as ``hf-trust demo --methods ggeur --full``: cached frozen EfficientNet-Lite0 features of
Fashion-MNIST (2000 train / 1000 test, 32 px), 10 clients, Dir(α) with ≥ 1 sample of every class per client,
a linear head trained with Adam 1e-3, batch 64, by weighted FedAvg for 10 rounds, every augmentation filling
each held class to the global class count. Only the local epochs per round differ: the demo trains 2, the
released code 10 (the default here).

Run: ``python benchmarks/ggeur_label_skew.py [--local-epochs 10] [--alphas 0.05,0.1,0.5] [--seeds 0,1,2]``.
Prints a markdown table (mean ± population std of the final-round test accuracy over the seeds) and writes
the per-seed numbers as JSON next to the results file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from hf_trust.atomic import atomic_write_text  # noqa: E402
from hf_trust.demo.studies.ggeur import VARIANTS, efficientnet_embeddings, run_label_skew  # noqa: E402

LABELS = {"none": "FedAvg", "oversample": "+oversample", "isotropic": "+isotropic", "local_cov": "+local cov"}


def run(alpha: float, seed: int, local_epochs: int, rounds: int, train, test, variants) -> dict[str, float]:
    runs = run_label_skew(train, test, alpha, seed, rounds, variants=variants, local_epochs=local_epochs)
    return {variant: float(runs[variant]["final"]) for variant in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--alphas", default="0.05,0.1,0.5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="subset of " + ",".join(VARIANTS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ggeur_label_skew.json"))
    args = parser.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    train, test = efficientnet_embeddings("fashion", 2000, 1000, 32)
    t0 = time.time()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for alpha in alphas:
        for seed in seeds:
            results.setdefault(str(alpha), {})[str(seed)] = run(
                alpha, seed, args.local_epochs, args.rounds, train, test, variants
            )
            print(f"α={alpha} seed={seed}: {results[str(alpha)][str(seed)]} ({time.time() - t0:.0f} s)", flush=True)
    meta = {
        "variants": variants,
        "local_epochs": args.local_epochs,
        "rounds": args.rounds,
        "seeds": seeds,
        "wall_s": time.time() - t0,
    }
    atomic_write_text(Path(args.out), json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"\n{args.rounds} rounds × {args.local_epochs} local epochs, seeds {seeds}:\n")
    print("| α | " + " | ".join(LABELS.get(v, "+GGEUR") for v in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for alpha in alphas:
        cells = []
        for v in variants:
            vals = np.asarray([results[str(alpha)][str(s)][v] for s in seeds])
            cells.append(f"{vals.mean():.3f} ± {vals.std():.3f}")
        print(f"| {alpha} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
