"""Run a module under ``accelerate launch`` for the multi-process tests (CPU: gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(module: str, out: "str | os.PathLike", processes: int = 1, extra: tuple[str, ...] = (),
                      timeout: int = 600):
    """``accelerate launch -m module out`` with ``processes`` CPU processes; returns ``torch.load(out)``.

    Several CPU processes need ``--multi_gpu`` (on a CPU-only machine that means MULTI_CPU/gloo); ``--cpu``
    with more than one process would start a single one.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--main_process_port", str(free_port()), *extra]
    if not any(e.startswith("--use_deepspeed") for e in extra):
        cmd += ["--multi_gpu"] if processes > 1 else ["--cpu"]
    cmd += ["-m", module, str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=False)
