"""Cost of GGEUR's server and client stages as the embedding width d and the class count C grow.

For d ∈ {64, 512, 1280} (and C ∈ {10, 100} at d = 512):
* statistics round: per-class statistics of 10 clients + exact pooling + eigendecomposition (+ the
  sampling transform V·diag(√λ)·Vᵀ, computed once per class), relative to
  one epoch of training the linear head on the same real rows (the natural unit of a client's work);
* augmentation: drawing 100 rows per class along the global shape, per 1000 rows;
* peak memory of pooling in class chunks vs all classes at once (C·d² float64).

Run: ``python benchmarks/ggeur_bench.py``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

torch.set_num_threads(1)

from hf_trust.trainers.federated import ClassMoments  # noqa: E402
from hf_trust.trainers.ggeur.geometry import GeometricShape  # noqa: E402
from hf_trust.trainers.ggeur.statistics import aggregate, client_statistics  # noqa: E402


def data(n, d, c, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return rng.normal(size=(n, d)) + y[:, None] * 0.05, y


def head_epoch(z, y, c):
    head = torch.nn.Linear(z.shape[1], c)
    opt = torch.optim.Adam(head.parameters(), 1e-3)
    x, t = torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(y)
    t0 = time.perf_counter()
    for s in range(0, len(x), 64):
        loss = torch.nn.functional.cross_entropy(head(x[s : s + 64]), t[s : s + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def bench(d, c, n_per_client=500, clients=10):
    parts = [data(n_per_client, d, c, seed=k) for k in range(clients)]
    t0 = time.perf_counter()
    payloads = [client_statistics(z, y, client_id=k) for k, (z, y) in enumerate(parts)]
    pooled = aggregate(payloads, guide_threshold=0.8)
    shapes = {k: GeometricShape.from_covariance(p.cov) for k, p in pooled.items()}
    for shape in shapes.values():
        shape.transform("sqrt")
    stats = time.perf_counter() - t0
    epoch = sum(head_epoch(z, y, c) for z, y in parts)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    drawn = 0
    for k, shape in shapes.items():
        drawn += len(shape.sample(pooled[k].mean[None, :], rng, per_center=1000))
    aug = time.perf_counter() - t0
    return stats, epoch, aug / drawn * 1000


def chunk_memory(d, c, chunk):
    """Peak resident memory of a fresh process that builds C·d² moments and reduces them in chunks
    (``clone`` stands in for the cross-process reduce, which also allocates its output)."""
    import subprocess
    import sys

    code = (
        "import resource, torch, numpy as np\n"
        "from hf_trust.trainers.federated import ClassMoments, reduce_moments\n"
        f"m = ClassMoments(torch.rand({c}), torch.rand({c}, {d}, dtype=torch.float64), torch.rand({c}, {d}, {d}, dtype=torch.float64))\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"reduce_moments(m, lambda t: t.clone(), chunk_size={chunk})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024


def main():
    full = ClassMoments.zeros(100, 512).s2.element_size() * 100 * 512 * 512
    print(f"C=100, d=512: S2 holds {full / 2**20:.0f} MiB; extra peak memory of the reduce (max RSS growth):")
    for chunk in (None, 16, 4):
        print(f"  chunk={chunk}: {chunk_memory(512, 100, chunk) / 2**20:.1f} MiB")
    print("d     C    stats round  head epoch (10 clients)  ratio   augmentation per 1000 rows")
    for d, c in ((64, 10), (512, 10), (1280, 10), (512, 100)):
        stats, epoch, aug = bench(d, c)
        print(f"{d:<5} {c:<4} {stats:9.3f} s  {epoch:9.3f} s               {stats / epoch:6.2f}x  {aug * 1000:8.2f} ms")


if __name__ == "__main__":
    main()
