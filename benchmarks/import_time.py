"""Start-up cost of hf-trust against ``import torch``, measured in fresh interpreters.

Each command runs ``--runs`` times (interleaved, so a load spike hits every command alike) in a fresh interpreter
started from a scratch folder; the script prints the median wall time and the median CPU time (user + system of
the child) and their difference from / ratio to ``import torch``.  On a shared, loaded machine the wall times
swing with the load, the CPU times much less; so it also prints, from one ``python -X importtime`` run per
command, the cumulative import time of each top-level module the command imported (the interpreter's own
accounting, and the number that says *what* was imported).

    python benchmarks/import_time.py                 # every command, 5 runs each
    python benchmarks/import_time.py --runs 7 --commands torch hf_trust help

Commands: ``torch`` (``import torch``), ``peft`` (``import peft``), ``hf_trust`` (``import hf_trust``),
``hf_trust+peft`` (``import hf_trust, peft``: what a PEFT user pays, tuner registration included) and ``help``
(``hf-trust --help``; ``python -m hf_trust --help`` for the ``-X importtime`` run).  Set ``PYTHONPATH`` to
measure another tree (the scratch working folder keeps the current directory out of ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
SCRIPT = Path(PY).with_name("hf-trust")
COMMANDS = {
    "torch": [PY, "-c", "import torch"],
    "peft": [PY, "-c", "import peft"],
    "hf_trust": [PY, "-c", "import hf_trust"],
    "hf_trust+peft": [PY, "-c", "import hf_trust, peft"],
    "help": [str(SCRIPT), "--help"] if SCRIPT.exists() else [PY, "-m", "hf_trust", "--help"],
}
IMPORTTIME = {**COMMANDS, "help": [PY, "-m", "hf_trust", "--help"]}
#: top-level modules worth naming in the -X importtime summary
WATCH = ("torch", "peft", "transformers", "hf_trust")


def _run_once(cmd: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _importtime(cmd: list[str], cwd: str) -> dict[str, float]:
    """Cumulative import time (s) of each top-level module in ``WATCH`` and the total over top-level imports."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, capture_output=True, text=True, check=True)
    out: dict[str, float] = {}
    total, started = 0.0, False
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m or m.group(3) != " ":  # only top-level imports (one space before the name)
            continue
        name, cumulative = m.group(4), int(m.group(2)) / 1e6
        if not started:  # the interpreter's own start-up, up to and including `site`: the same for every command
            started = name == "site"
            continue
        total += cumulative
        if name.split(".")[0] in WATCH:
            out[name] = out.get(name, 0.0) + cumulative
    out["total"] = total
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per command (median reported; at least 5)")
    ap.add_argument("--commands", nargs="+", choices=list(COMMANDS), default=list(COMMANDS))
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(["torch", *args.commands]))  # the baseline always runs
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as cwd:
        for n in names:  # one untimed run each: the OS file cache is warm for every command alike
            _run_once(COMMANDS[n], cwd)
        for _ in range(max(args.runs, 1)):
            for n in names:
                samples[n].append(_run_once(COMMANDS[n], cwd))
        itimes = {n: _importtime(IMPORTTIME[n], cwd) for n in names}

    med = {n: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s)) for n, s in samples.items()}
    base_wall, base_cpu = med["torch"]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"{args.runs} runs per command (median)"
    )
    print()
    print(
        "| command | wall s | CPU s | CPU − torch s | CPU / torch | -X importtime: cumulative s of top-level imports |"
    )
    print("|---|---|---|---|---|---|")
    for n in names:
        wall, cpu = med[n]
        it = itimes[n]
        named = ", ".join(f"{k} {v:.2f}" for k, v in sorted(it.items()) if k != "total")
        print(
            f"| `{' '.join(Path(COMMANDS[n][0]).name if i == 0 else a for i, a in enumerate(COMMANDS[n]))}` "
            f"| {wall:.2f} | {cpu:.2f} | {cpu - base_cpu:+.2f} | {cpu / base_cpu:.2f} | "
            f"{it['total']:.2f} ({named or 'none of ' + '/'.join(WATCH)}) |"
        )
    print()
    print("wall − torch: " + ", ".join(f"{n} {med[n][0] - base_wall:+.2f} s" for n in names if n != "torch"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
