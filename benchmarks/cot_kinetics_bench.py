"""Cost of CoT-Kinetics scoring relative to one forward pass that returns all hidden states.

* time of ``score_batch`` (energy terms + the five baselines) / time of ``model(..., output_hidden_states=True)``
  on the same tokens, measured in the same process with the two calls interleaved (goal for the default,
  no logit lens: ≤ 1.2× at T = 512); the logit lens on 3 layers and on all layers is timed as an option;
* peak memory of the hooked scorer vs a forward that returns all hidden states, as the sequence grows.

Model: SmolLM2-135M-Instruct (``hf_trust.assets.load_smollm2``).
Run: ``python benchmarks/cot_kinetics_bench.py [--repeats 7] [--lengths 128 512]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hf_trust.metrics.cot_kinetics import CotKineticsConfig, score_batch

torch.set_num_threads(1)

#: Whole sequences are scored (no think delimiters), as a trace with no `</think>` would be.
PLAIN = CotKineticsConfig(think_start="", think_end="")
SETTINGS: dict[str, CotKineticsConfig] = {
    "default (no lens)": PLAIN,
    "lens on 3 layers": PLAIN.replace(beta=1.0, lens_layers=[10, 20, 30]),
    "lens on all 31 states": PLAIN.replace(beta=1.0),
}


def timing(model, length: int, repeats: int, settings: list[str]) -> tuple[float, dict[str, float]]:
    """Median seconds of the reference forward and of each scoring setting, interleaved call by call so
    that load from other processes hits both alike."""
    g = torch.Generator().manual_seed(length)
    ids = torch.randint(100, 20000, (1, length), generator=g)
    seq = ids[0].tolist()
    base: list[float] = []
    runs: dict[str, list[float]] = {k: [] for k in settings}
    with torch.no_grad():
        model(input_ids=ids, output_hidden_states=True)  # warm-up
        score_batch(model, [seq], [8], [], [], PLAIN)
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            model(input_ids=ids, output_hidden_states=True)
        base.append(time.perf_counter() - t0)
        for name in settings:
            t0 = time.perf_counter()
            score_batch(model, [seq], [8], [], [], SETTINGS[name])
            runs[name].append(time.perf_counter() - t0)
    return statistics.median(base), {k: statistics.median(v) for k, v in runs.items()}


def peak_rss(model, mode: str, length: int) -> float:
    """Peak RSS growth (MiB) during one call, sampled every 2 ms by a thread (ru_maxrss would only show the
    model-loading peak)."""
    import threading

    import psutil

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
            score_batch(model, [ids[0].tolist()], [8], [], [], PLAIN)
    done.set()
    t.join()
    return (peak[0] - before) / 2**20


def main() -> None:
    from hf_trust import assets

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--memory", action="store_true", help="also measure peak RSS growth")
    args = ap.parse_args()
    model, _tok = assets.load_smollm2()
    for length in args.lengths:
        base, runs = timing(model, length, args.repeats, args.settings)
        print(f"T={length}: forward with output_hidden_states {base:.3f} s (median of {args.repeats})")
        for name, t in runs.items():
            print(f"  scoring, {name:22s} {t:.3f} s  ratio {t / base:.2f}x")
    if args.memory:
        print("peak RSS growth (MiB) during one call: forward(output_hidden_states) vs hooked scorer (default)")
        for length in (256, 1024, 2048):
            hs, sc = peak_rss(model, "hidden_states", length), peak_rss(model, "scorer", length)
            print(f"  T={length}: {hs:.0f} vs {sc:.0f}")


if __name__ == "__main__":
    main()
