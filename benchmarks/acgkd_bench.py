"""ACGKD vs GFKD-ARM: wall time and peak memory of one generation iteration at equal bank size, and as ξ varies.

Run: ``python benchmarks/acgkd_bench.py [--graphs 128] [--iters 20] [--seeds 0 1 2]``. Prints the ratio
GFKD-ARM / ACGKD measured in this process (threads=1). Peak memory is the traced Python-allocator peak
is measured as the bytes autograd saves for backward during one iteration (activation memory; parameters
and optimizer state come on top and are listed as bank parameters). GFKD-ARM's two no-grad forward
passes save nothing, so this column under-counts its transient memory.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hf_trust.trainers.acgkd import ACGKDConfig, ACGKDCore, GNNClassifier


def measure(mode: str, xi: float, graphs: int, iters: int, seed: int, teacher) -> tuple[float, float]:
    args = ACGKDConfig(
        output_dir="/tmp/acgkd_bench",
        max_steps=1,
        gen_mode=mode,
        xi=xi,
        num_pseudo_graphs=graphs,
        min_nodes=10,
        max_nodes=29,
        report_to="none",
        seed=seed,
    )
    core = ACGKDCore(teacher, GNNClassifier(7, 32, None, 2), args)
    idx = torch.arange(graphs)
    core.generator_step(idx, 0)  # PyG template compilation + allocator warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        core.generator_step(idx, 0)
        times.append(time.perf_counter() - t0)
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        core.generator_step(idx, 0)
    core.close()
    return statistics.median(times), saved[0] / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--graphs", type=int, default=128)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = GNNClassifier(7, 64, 2, 5, "gin").eval()  # GFKD's teacher shape; weights do not change timing
    print(f"bank M={a.graphs}, n in [10,29], teacher GIN-5-64, median of {a.iters} iterations, seeds {a.seeds}")
    print(f"{'xi':>5} {'mode':>9} {'s/iter':>9} {'saved MiB':>9} {'bank params':>11}")
    for xi in (0.1, 0.3, 0.6, 1.0):
        row = {}
        for mode in ("acgkd", "gfkd_arm"):
            ts, ms = zip(*[measure(mode, xi, a.graphs, a.iters, s, teacher) for s in a.seeds])
            row[mode] = (statistics.mean(ts), statistics.mean(ms))
            from hf_trust.trainers.acgkd import PseudoGraphBank

            n_par = PseudoGraphBank(a.graphs, 7, (10, 29), xi=xi, seed=a.seeds[0]).num_bank_parameters()
            print(
                f"{xi:>5} {mode:>9} {row[mode][0]:>9.4f} {row[mode][1]:>9.1f} {n_par:>11} "
                f"(time spread {min(ts):.4f}-{max(ts):.4f})"
            )
        print(
            f"{xi:>5} GFKD-ARM/ACGKD: time x{row['gfkd_arm'][0] / row['acgkd'][0]:.2f}, "
            f"saved-activation memory x{row['gfkd_arm'][1] / row['acgkd'][1]:.2f}"
        )


if __name__ == "__main__":
    main()
