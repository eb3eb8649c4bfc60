"""Cost of CoT-Kinetics scoring.

* scoring time per sample / one forward pass with ``output_hidden_states=True`` on the same tokens
  (goal ≤ 1.2×), with the logit lens on all layers, on 3 layers, and off (β = 0 with no lens layers);
* peak memory of the hooked scorer vs a forward that returns all hidden states, as the sequence grows.

Model: SmolLM2-135M when its cache folder exists (``hf_trust.assets.load_smollm2``), else a random Llama
of the same shape. Run: ``python benchmarks/cot_kinetics_bench.py``.
"""

from __future__ import annotations

import statistics
import time

import torch

torch.set_num_threads(1)


def load():
    from hf_trust import assets

    return assets.load_smollm2()


def timing(model, tok, length: int, repeats: int = 3):
    from hf_trust.metrics.cot_kinetics.kinetics import EnergyWeights, score_batch

    ids = torch.randint(100, 20000, (1, length))
    seq = ids[0].tolist()
    base, runs = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            model(input_ids=ids, output_hidden_states=True)
        base.append(time.perf_counter() - t0)
    settings = {"lens all 31 layers": None, "lens 3 layers": [10, 20, 30], "no lens": []}
    for name, layers in settings.items():
        w = EnergyWeights(beta=0.0) if layers == [] else EnergyWeights()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            score_batch(model, [seq], [8], [], [], w, lens_layers=layers)
            times.append(time.perf_counter() - t0)
        runs[name] = statistics.median(times)
    return statistics.median(base), runs


def peak_rss(model, mode: str, length: int) -> float:
    """Peak RSS growth (MiB) during one call, sampled every 2 ms by a thread (ru_maxrss would only show the
    model-loading peak)."""
    import threading

    import psutil

    from hf_trust.metrics.cot_kinetics.kinetics import EnergyWeights, score_batch

    proc = psutil.Process()
    ids = torch.randint(100, 20000, (1, length))
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    t = threading.Thread(target=sample)
    t.start()
    with torch.no_grad():
        if mode == "hidden_states":
            out = model(input_ids=ids, output_hidden_states=True)
            del out
        else:
            score_batch(model, [ids[0].tolist()], [8], [], [], EnergyWeights(), lens_layers=[10, 20, 30])
    done.set()
    t.join()
    return (peak[0] - before) / 2**20


def main():
    model, tok = load()
    for length in (128, 512):
        base, runs = timing(model, tok, length)
        print(f"T={length}: forward with hidden states {base:.3f} s")
        for name, t in runs.items():
            print(f"  scoring, {name:18s} {t:.3f} s  ratio {t / base:.2f}x")
    print("peak RSS growth (MiB) during one call: forward(output_hidden_states) vs hooked scorer (3 lens layers)")
    for length in (256, 1024, 2048):
        print(
            f"  T={length}: {peak_rss(model, 'hidden_states', length):.0f} vs {peak_rss(model, 'scorer', length):.0f}"
        )


if __name__ == "__main__":
    main()
