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


def launch_module(
    module: str,
    *args: str,
    processes: int = 1,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: int = 600,
) -> None:
    """``accelerate launch -m module args...`` with ``processes`` CPU processes; fails the test on a non-zero exit.

    Several CPU processes need ``--multi_gpu`` (on a CPU-only machine that means MULTI_CPU/gloo); ``--cpu``
    with more than one process would start a single one.
    """
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(free_port()),
        *extra,
    ]
    if not any(e.startswith("--use_deepspeed") for e in extra):
        cmd += ["--multi_gpu"] if processes > 1 else ["--cpu"]
    cmd += ["-m", module, *map(str, args)]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def accelerate_launch(
    module: str,
    out: str | os.PathLike,
    processes: int = 1,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: int = 600,
):
    """:func:`launch_module` with one output path argument; returns ``torch.load(out)``."""
    launch_module(module, str(out), processes=processes, extra=extra, env=env, timeout=timeout)
    return torch.load(out, weights_only=False)
