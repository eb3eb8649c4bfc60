"""Robust and private aggregation that only Flower's strategies make possible (hf-trust issue 16).

Experiment 1 (robustness): 10 clients on sklearn's digits (1,400 training images, Dirichlet α = 1 label skew), a
64→64→10 MLP, 20 rounds of 2 local epochs; clients 0 and 1 are malicious and return a sign-flipped update
(θ_g − Δ), a 10×-scaled one (θ_g + 10Δ) or both (θ_g − 10Δ).  Flower's FedAvg, FedMedian, Krum (f = 2) and FedTrimmedAvg (β = 0.2),
unchanged, with and without the attack; server-side test accuracy per round; seeds 0, 1, 2 (partition, model
init, client shuffling).

Experiment 2 (privacy): Flower's DifferentialPrivacyServerSideFixedClipping around an unweighted FedAvg (no
attack), clipping norm C = 0.5, noise multipliers σ ∈ {0, 0.5, 1, 2, 4, 8}; noise std on the mean = σC/10.
ε is our own bound, not Flower's accountant (it needs the optional dp-accounting package): T Gaussian releases
without subsampling amplification give ρ-zCDP with ρ = T/(2σ²), and ε = ρ + 2·sqrt(ρ·ln(1/δ)) at δ = 1e-5.

Everything runs in one start of Flower's Simulation Engine (``run_simulations``).  Writes
``benchmarks/results/flower_robustness.png``, ``flower_dp.png`` and the section between the ``robustness`` markers
of ``benchmarks/results/flower.md`` (the text outside the markers is kept).

Run: ``python benchmarks/flower_robustness.py [--rounds 20] [--seeds 0 1 2] [--quick] [--save-json runs.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

for _k, _v in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}.items():
    os.environ.setdefault(_k, _v)

import logging  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from hf_trust.trainers.federated import (  # noqa: E402
    ClientContext,
    DirichletLabelPartitioner,
    FederatedConfig,
    Partitions,
    SupervisedClientTrainer,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MALICIOUS = (0, 1)
NUM_CLIENTS = 10
CLIP = 0.5
SIGMAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
DELTA = 1e-5
STRATEGIES = ("FedAvg", "FedMedian", "Krum", "FedTrimmedAvg")
ATTACKS = ("none", "sign_flip", "scale10", "flip10")
FACTORS = {"sign_flip": -1.0, "scale10": 10.0, "flip10": -10.0}
TITLES = {"none": "no attack", "sign_flip": "2/10 send −Δ", "scale10": "2/10 send 10·Δ", "flip10": "2/10 send −10·Δ"}


class AttackTrainer(SupervisedClientTrainer):
    """Honest local training; the malicious clients then replace their update Δ by −Δ, 10Δ or −10Δ."""

    def __init__(self, model, attack: str, malicious=MALICIOUS, **kw):
        super().__init__(model, **kw)
        self.attack, self.malicious = attack, set(malicious)

    def fit(self, ctx: ClientContext):
        result = super().fit(ctx)
        if self.attack != "none" and ctx.client_id in self.malicious:
            factor = FACTORS[self.attack]
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if name in ctx.global_params:
                        g = ctx.global_params[name].to(p.device)
                        p.copy_(g + factor * (p - g))
        return result


class TensorPartitions(Partitions):
    """Client data as in-memory tensors (no Arrow row access on the clients)."""

    def __init__(self, base: Partitions, x: torch.Tensor, y: torch.Tensor):
        super().__init__(base.indices, base.labels, base.domains, base.client_domains, base.method, base.params)
        self.x, self.y = x, y

    def client_dataset(self, k: int) -> dict:
        ix = torch.from_numpy(self.indices[k])
        return {"x": self.x[ix], "label": self.y[ix]}


def digits(seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = np.random.default_rng(0).permutation(len(y))  # one fixed train/test split for every seed
    tr, te = perm[:1400], perm[1400:]
    labels = d.target[tr]
    base = DirichletLabelPartitioner(num_clients=NUM_CLIENTS, alpha=1.0, min_size=20, seed=seed).split(labels)
    return TensorPartitions(base, x[tr], y[tr]), {"x": x[te], "label": y[te]}


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def flower_strategy(name: str):
    from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum

    common = dict(fraction_evaluate=0.0, min_train_nodes=NUM_CLIENTS, min_evaluate_nodes=0, min_available_nodes=1)
    return {
        "FedAvg": lambda: FedAvg(**common),
        "FedMedian": lambda: FedMedian(**common),
        "Krum": lambda: Krum(num_malicious_nodes=len(MALICIOUS), **common),
        "FedTrimmedAvg": lambda: FedTrimmedAvg(beta=0.2, **common),
    }[name]()


def epsilon(sigma: float, rounds: int, delta: float = DELTA) -> float:
    """ε of T Gaussian releases (noise multiplier σ, no subsampling) via zCDP: ρ = T/(2σ²)."""
    if sigma <= 0:
        return math.inf
    rho = rounds / (2 * sigma**2)
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


def build_jobs(seeds, rounds):
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

    from hf_trust.trainers.federated.flower import UNIT_WEIGHT_KEY, FlowerFederation

    logging.getLogger("flwr").setLevel(logging.ERROR)  # after flwr's import: its per-strategy notices
    jobs = []
    for seed in seeds:
        parts, test = digits(seed)
        cfg = FederatedConfig(rounds=rounds, seed=seed, local_epochs=2)
        for attack in ATTACKS:
            for name in STRATEGIES:
                trainer = AttackTrainer(make_model(seed), attack, lr=0.1, batch_size=32)
                fed = FlowerFederation(trainer, flower_strategy(name), cfg, eval_datasets={"test": test})
                jobs.append(
                    ({"experiment": "robustness", "seed": seed, "attack": attack, "strategy": name}, fed, parts)
                )
        for sigma in SIGMAS:
            inner = FedAvg(
                weighted_by_key=UNIT_WEIGHT_KEY,  # uniform weights: the noise is calibrated to a C/m sensitivity
                fraction_evaluate=0.0,
                min_train_nodes=NUM_CLIENTS,
                min_evaluate_nodes=0,
                min_available_nodes=1,
            )
            strategy = DifferentialPrivacyServerSideFixedClipping(inner, sigma, CLIP, NUM_CLIENTS)
            trainer = AttackTrainer(make_model(seed), "none", lr=0.1, batch_size=32)
            fed = FlowerFederation(trainer, strategy, cfg, eval_datasets={"test": test})
            jobs.append(({"experiment": "dp", "seed": seed, "sigma": sigma}, fed, parts))
        # the unclipped unweighted reference for the DP table
        inner = FedAvg(
            weighted_by_key=UNIT_WEIGHT_KEY, fraction_evaluate=0.0, min_train_nodes=NUM_CLIENTS, min_available_nodes=1
        )
        trainer = AttackTrainer(make_model(seed), "none", lr=0.1, batch_size=32)
        fed = FlowerFederation(trainer, inner, cfg, eval_datasets={"test": test})
        jobs.append(({"experiment": "dp", "seed": seed, "sigma": None}, fed, parts))
    return jobs


def run(seeds, rounds) -> dict:
    from hf_trust.trainers.federated.flower import run_simulations

    jobs = build_jobs(seeds, rounds)
    t0 = time.time()
    run_simulations([(fed, parts) for _, fed, parts in jobs], raise_errors=True)
    total = time.time() - t0
    rows = []
    for meta, fed, _ in jobs:
        rows.append(
            {
                **meta,
                "accuracy": [r["eval_test_accuracy"] for r in fed.history],
                "failed": sum(len(r["failed_clients"]) for r in fed.history),
                "round_seconds": float(np.median([r["seconds"] for r in fed.history])),
                "startup_seconds": fed.timings.get("handshake_seconds"),
            }
        )
    return {"rounds": rounds, "seeds": list(seeds), "clip": CLIP, "delta": DELTA, "seconds": total, "runs": rows}


# ---------------------------------------------------------------------- report
def _acc(res, **match):
    runs = [r for r in res["runs"] if all(r.get(k) == v for k, v in match.items())]
    return np.array([r["accuracy"] for r in runs])


def plot(res) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, len(ATTACKS), figsize=(4 * len(ATTACKS), 3.4), sharey=True)
    rounds = np.arange(1, res["rounds"] + 1)
    for ax, attack in zip(axes, ATTACKS):
        for name in STRATEGIES:
            a = _acc(res, experiment="robustness", attack=attack, strategy=name)
            ax.plot(rounds, a.mean(0), label=name)
            ax.fill_between(rounds, a.min(0), a.max(0), alpha=0.15)
        ax.set_title(TITLES[attack], fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel(f"test accuracy (mean, min–max of {len(res['seeds'])} seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(RESULTS / "flower_robustness.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for sigma in (None, *SIGMAS):
        a = _acc(res, experiment="dp", sigma=sigma)
        label = "FedAvg, no clipping" if sigma is None else f"σ={sigma:g}, ε={epsilon(sigma, res['rounds']):.3g}"
        ax.plot(rounds, a.mean(0), label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (mean of seeds)")
    ax.set_title(f"DP server-side fixed clipping, C={res['clip']}", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(RESULTS / "flower_dp.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def tables(res) -> str:
    R = res["rounds"]
    lines = [
        f"### Robustness: final test accuracy after {R} rounds (mean ± std over seeds {res['seeds']})",
        "",
        "| strategy | " + " | ".join(TITLES[a] for a in ATTACKS) + " |",
        "|---|" + "---|" * len(ATTACKS),
    ]
    reach_rows = []
    for name in STRATEGIES:
        cells, reach = [], []
        for attack in ATTACKS:
            a = _acc(res, experiment="robustness", attack=attack, strategy=name)
            cells.append(f"{a[:, -1].mean():.3f} ± {a[:, -1].std():.3f}")
            first = [int(np.argmax(run >= 0.8)) + 1 for run in a if (run >= 0.8).any()]
            reach.append(f"{np.mean(first):.1f} ({len(first)}/{len(a)})" if first else f"– (0/{len(a)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        reach_rows.append(f"| {name} | " + " | ".join(reach) + " |")
    lines += [
        "",
        "Rounds to reach 80 % test accuracy (mean over the seeds that reach it; how many do):",
        "",
        "| strategy | " + " | ".join(TITLES[a] for a in ATTACKS) + " |",
        "|---|" + "---|" * len(ATTACKS),
        *reach_rows,
    ]
    lines += [
        "",
        f"### Differential privacy: DifferentialPrivacyServerSideFixedClipping(FedAvg unweighted), C = {res['clip']}",
        "",
        f"| noise multiplier σ | noise std on the mean | ε at δ = {res['delta']:g} (zCDP bound, {R} rounds) "
        "| final accuracy (mean ± std) | best round accuracy |",
        "|---|---|---|---|---|",
    ]
    for sigma in (None, *SIGMAS):
        a = _acc(res, experiment="dp", sigma=sigma)
        if sigma is None:
            lead = "no clipping, no noise | – | ∞"
        else:
            eps = epsilon(sigma, R)
            lead = f"{sigma:g} | {sigma * res['clip'] / NUM_CLIENTS:.3g} | {'∞' if math.isinf(eps) else f'{eps:.3g}'}"
        lines.append(f"| {lead} | {a[:, -1].mean():.3f} ± {a[:, -1].std():.3f} | {a.max(1).mean():.3f} |")
    return "\n".join(lines)


def write_section(md: str, marker: str) -> Path:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` of flower.md."""
    from hf_trust.atomic import atomic_write_text

    path = RESULTS / "flower.md"
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{md.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, text)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="1 seed, 4 rounds: a smoke run (no files written)")
    ap.add_argument("--save-json", type=Path, help="also keep the raw per-round accuracies of every run here")
    ap.add_argument("--from-json", type=Path, help="re-render the tables and plots from a --save-json file")
    args = ap.parse_args(argv)
    if args.from_json:
        res = json.loads(args.from_json.read_text())
    elif args.quick:
        res = run([0], 4)
        print(tables(res))
        return 0
    else:
        res = run(args.seeds, args.rounds)
        RESULTS.mkdir(parents=True, exist_ok=True)
        if args.save_json:
            from hf_trust.atomic import atomic_write_json

            atomic_write_json(args.save_json, res, indent=1)
    plot(res)
    md = tables(res)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    md = (
        f"Run {stamp}: {len(res['runs'])} federations of {NUM_CLIENTS} clients in one Simulation Engine start "
        f"({res['seconds']:.0f} s in all); python {sys.version.split()[0]}, flwr "
        f"{__import__('flwr').__version__}.\n\n{md}\n\n"
        "![robustness](flower_robustness.png)\n\n![dp](flower_dp.png)"
    )
    write_section(md, "robustness")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
