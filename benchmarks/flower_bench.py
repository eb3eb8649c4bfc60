"""Flower's Simulation Engine against the in-process engine (hf-trust issue 16).

1. Time per round of N clients (N = 20, 100; a 32→64→10 MLP, 32 rows per client, one local epoch, FedAvg):
   ``FlowerFederation`` on the Simulation Engine (Ray; 2 virtual-client workers of 1 CPU each) / the in-process
   ``FederatedTrainer`` (one thread).  Median over rounds 2..R; the first Flower round and the handshake, which
   include Ray's start-up and the workers' imports, are reported apart.  Goal: ≤ 1.5× at 100 clients.
2. Memory per virtual client: resident memory of the Ray workers that run the ClientApps (USS, summed) and of
   the driver's growth, after the run, divided by N; and the bytes of each SuperNode's Flower ``Context``.

Both runs use our FedAvg (``HFTrustStrategy``: the same float64 aggregation as in-process) so the rounds do the
same arithmetic; the global parameters are checked equal.  Also compares our Dirichlet partitioner with
flwr-datasets' at the same α.  Writes the sections between the ``bench`` and ``interop`` markers of
``benchmarks/results/flower.md`` (the text outside the markers is kept).

Run: ``python benchmarks/flower_bench.py [--clients 20 100] [--rounds 12]``.
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
}.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from hf_trust.trainers.federated import (  # noqa: E402
    FedAvg,
    FederatedConfig,
    FederatedTrainer,
    IIDPartitioner,
    Partitions,
    SupervisedClientTrainer,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROWS = 32


class TensorPartitions(Partitions):
    """In-memory tensor columns: the same data access cost for both engines."""

    def __init__(self, base: Partitions, x: torch.Tensor, y: torch.Tensor):
        super().__init__(base.indices, base.labels, base.domains, base.client_domains, base.method, base.params)
        self.x, self.y = x, y

    def client_dataset(self, k: int) -> dict:
        ix = torch.from_numpy(self.indices[k])
        return {"x": self.x[ix], "label": self.y[ix]}


def make(n_clients: int, d: int = 32, classes: int = 10, seed: int = 0) -> TensorPartitions:
    n = n_clients * ROWS
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, d)).astype(np.float32) + y[:, None] * 0.1
    base = IIDPartitioner(num_clients=n_clients, seed=seed).split(y)
    return TensorPartitions(base, torch.from_numpy(x), torch.from_numpy(y))


def trainer(seed: int = 0) -> SupervisedClientTrainer:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return SupervisedClientTrainer(model, lr=0.05, batch_size=32)


class NoopTrainer(SupervisedClientTrainer):
    """No local training at all: a round's time is then the engine's own cost."""

    def fit(self, ctx):
        from hf_trust.trainers.federated import ClientResult

        return ClientResult(len(ctx.dataset["label"]), {"train_loss": 0.0})


def noop_trainer(seed: int = 0) -> NoopTrainer:
    base = trainer(seed)
    return NoopTrainer(base.model, lr=0.05, batch_size=32)


def _ray_worker_uss() -> tuple[int, int]:
    """(number, summed USS bytes) of the processes running Flower's ClientAppActor."""
    total, count = 0, 0
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("ClientAppActor" in part for part in (p.info["cmdline"] or [])):
                total += p.memory_full_info().uss
                count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return count, total


def _ray_infra_rss() -> int:
    """RSS of Ray's own daemons (GCS server, raylet, ...): a fixed cost, whatever the number of clients."""
    total = 0
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if any(name in cmd for name in ("gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env")):
                total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def bench(n_clients: int, rounds: int, cpus_per_client: float = 1.0) -> dict:
    from hf_trust.trainers.federated.flower import FlowerFederation, default_backend_config, run_simulations

    parts = make(n_clients)
    cfg = FederatedConfig(rounds=rounds, seed=0)
    # in-process references: real local training, and none (the engine's own cost)
    ref = FederatedTrainer(trainer(), FedAvg(), cfg)
    ref.fit(parts)
    in_proc = [r["seconds"] for r in ref.history[1:]]
    ref_noop = FederatedTrainer(noop_trainer(), FedAvg(), cfg)
    ref_noop.fit(parts)

    class Measured(FlowerFederation):
        """Samples the workers' memory while they are alive (the ServerApp runs in this process)."""

        def on_round_end(self, row, start, replies):
            if row["round"] == rounds:
                self.memory = {
                    "workers": _ray_worker_uss(),
                    "driver_rss": psutil.Process().memory_info().rss,
                    "ray_infra": _ray_infra_rss(),
                }

    rss0 = psutil.Process().memory_info().rss
    fed = Measured(trainer(), FedAvg(), cfg)
    noop = FlowerFederation(noop_trainer(), FedAvg(), cfg)
    t0 = time.perf_counter()
    run_simulations([(fed, parts), (noop, parts)], backend_config=default_backend_config(cpus_per_client))
    wall = time.perf_counter() - t0
    flower = [r["seconds"] for r in fed.history[1:]]
    diff = max(float((fed.global_params[k] - ref.global_params[k]).abs().max()) for k in ref.global_params)
    n_workers, uss = fed.memory["workers"]
    return {
        "clients": n_clients,
        "rounds": rounds,
        "cpus_per_client": cpus_per_client,
        "in_process_round_s": statistics.median(in_proc),
        "flower_round_s": statistics.median(flower),
        "ratio": statistics.median(flower) / statistics.median(in_proc),
        "flower_round_min_max_s": [min(flower), max(flower)],
        "noop_in_process_round_s": statistics.median(r["seconds"] for r in ref_noop.history[1:]),
        "noop_flower_round_s": statistics.median(r["seconds"] for r in noop.history[1:]),
        "flower_first_round_s": fed.history[0]["seconds"],
        "startup_s": fed.timings["handshake_seconds"],
        "simulation_wall_s": wall,
        "ray_workers": n_workers,
        "worker_uss_bytes": uss,
        "driver_rss_growth_bytes": fed.memory["driver_rss"] - rss0,
        "memory_per_virtual_client_bytes": (uss + max(0, fed.memory["driver_rss"] - rss0)) / n_clients,
        "ray_daemons_rss_bytes": fed.memory["ray_infra"],
        "max_abs_diff_vs_in_process": diff,
    }


def report(rows: list[dict]) -> str:
    mb = 1024**2
    lines = [
        "| clients | workers (CPU each) | in-process round | Flower simulation round (min–max) | ratio "
        "| engine alone, no local training: in-process / Flower | first Flower round | Ray start-up + handshake "
        "| memory / virtual client | Ray daemons | max abs diff vs in-process |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['ray_workers']} ({r['cpus_per_client']:g}) | {r['in_process_round_s'] * 1e3:.0f} ms "
            f"| {r['flower_round_s'] * 1e3:.0f} ms ({r['flower_round_min_max_s'][0] * 1e3:.0f}–"
            f"{r['flower_round_min_max_s'][1] * 1e3:.0f}) | **{r['ratio']:.2f}×** "
            f"| {r['noop_in_process_round_s'] * 1e3:.0f} ms / {r['noop_flower_round_s'] * 1e3:.0f} ms "
            f"| {r['flower_first_round_s']:.2f} s | {r['startup_s']:.1f} s "
            f"| {r['memory_per_virtual_client_bytes'] / mb:.1f} MB ({r['worker_uss_bytes'] / mb:.0f} MB workers' USS"
            f" + driver +{r['driver_rss_growth_bytes'] / mb:.0f} MB) | {r['ray_daemons_rss_bytes'] / mb:.0f} MB "
            f"| {r['max_abs_diff_vs_in_process']:.1e} |"
        )
    return "\n".join(lines)


def interop_table(seeds=range(10), num_clients: int = 10) -> str:
    """Our DirichletLabelPartitioner vs flwr_datasets' DirichletPartitioner (self_balancing=True) at the same α:
    label-skew statistics averaged over seeds (the same seed gives different rows by design)."""
    from hf_trust.trainers.federated import DirichletLabelPartitioner
    from hf_trust.trainers.federated.flower import dirichlet_to_flwr, partitions_from_flwr

    rng = np.random.default_rng(0)
    from datasets import Dataset

    ds = Dataset.from_dict({"label": rng.integers(0, 10, 3000).tolist()})

    def stats(parts):
        hist = parts.histogram().astype(float)
        share = hist / hist.sum(1, keepdims=True)
        sizes = hist.sum(1)
        return np.array([share.max(1).mean(), (share >= 0.05).sum(1).mean(), sizes.std() / sizes.mean()])

    lines = [
        "| α | max class share per client (ours / theirs) | classes ≥ 5 % of a client (ours / theirs) "
        "| client-size CV (ours / theirs) |",
        "|---|---|---|---|",
    ]
    for alpha in (0.1, 0.5, 1.0, 10.0):
        ours, theirs = [], []
        for s in seeds:
            p = DirichletLabelPartitioner(num_clients, alpha, min_size=5, seed=s)
            ours.append(stats(p.split(ds)))
            theirs.append(stats(partitions_from_flwr(dirichlet_to_flwr(p), ds)))
        o, t = np.mean(ours, 0), np.mean(theirs, 0)
        lines.append(f"| {alpha:g} | {o[0]:.3f} / {t[0]:.3f} | {o[1]:.2f} / {t[1]:.2f} | {o[2]:.3f} / {t[2]:.3f} |")
    return (
        f"{num_clients} clients, 3,000 rows of 10 balanced classes, mean over seeds 0–{max(seeds)}; theirs built by "
        "`dirichlet_to_flwr(ours)` (same α, min size, seed, `self_balancing=True`).\n\n" + "\n".join(lines)
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 100])
    ap.add_argument(
        "--cpus-per-client", type=float, nargs="+", default=[1.0, 0.5], help="Ray CPUs per virtual client (→ workers)"
    )
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--interop-only", action="store_true", help="only the partitioner statistics (no Ray)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from flower_robustness import write_section

    interop = interop_table()
    write_section(interop, "interop")
    print(interop)
    if args.interop_only:
        return 0
    rows = [bench(n, args.rounds, c) for n in args.clients for c in args.cpus_per_client]
    load = os.getloadavg()
    md = (
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min; other jobs shared the machine); python "
        f"{sys.version.split()[0]}, flwr {__import__('flwr').__version__}, ray {__import__('ray').__version__}; "
        f"{args.rounds} rounds, medians over rounds 2..{args.rounds}.\n\n" + report(rows)
    )
    write_section(md, "bench")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
