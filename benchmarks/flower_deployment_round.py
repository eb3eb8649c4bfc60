"""Round time of a real Flower deployment, and where it goes.

A SuperLink and two SuperNodes as separate processes on 127.0.0.1 run ``examples/flower_app`` (``flwr run``,
2 clients, ``--rounds`` rounds) twice in one session: once with the ServerApp polling for replies every 3 s
(``pull-interval=3``, what Flower's deployment grid does), once every 0.1 s, and once more with the SuperNodes'
SuperExec also polling for tasks every 0.1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, Flower's default 1 s).  Reports each run's round times (``history.json``) and the median over rounds 2..4, and splits a
round from the SuperNodes' time-stamped logs:

* *pull wait*: from a SuperNode's reply to its next message: the SuperNode sleeps 3 s whenever it finds no message
  (``flwr/supernode/start_client_internal.py``), so the next round's message waits for that sleep to end;
* *process launch*: from receiving a message to the ``flwr-clientapp`` process's first log line (SuperExec's 1 s
  task poll, a Python start, Flower's own imports);
* *app import and set-up*: to the app's first log line (torch, datasets, hf-trust, the federation's data and model);
* *train and reply*: to the reply being sent (local training, serialisation, the SuperNode's 0.5 s reply poll).

Writes the section between the ``deployment:start``/``deployment:end`` markers of ``benchmarks/results/flower.md``.

Run: ``python benchmarks/flower_deployment_round.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE.parent / "examples" / "flower_app"
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Logged:
    """A process in its own session whose output lines are kept with the seconds since ``t0``."""

    def __init__(self, cmd: list, env: dict, t0: float):
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        threading.Thread(target=self._pump, args=(t0,), daemon=True).start()

    def _pump(self, t0: float) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append((time.monotonic() - t0, re.sub(r"\x1b\[[0-9;]*m", "", raw.decode(errors="replace"))))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _wait_port(port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


def phases(lines: list[tuple[float, str]]) -> dict[str, list[float]]:
    """Per train message of one SuperNode: the four phases of the module docstring (seconds)."""
    out: dict[str, list[float]] = {"pull wait": [], "process launch": [], "app import and set-up": []}
    out["train and reply"] = []
    sent_at, got_at, started_at, app_at = None, None, None, None
    for t, line in lines:
        if "Receiving: train message" in line:
            if sent_at is not None:
                out["pull wait"].append(t - sent_at)
            got_at, started_at, app_at = t, None, None
        elif "Start `flwr-clientapp` process" in line and got_at is not None:
            started_at = t
            out["process launch"].append(t - got_at)
        elif started_at is not None and app_at is None and "WARNING" in line:
            app_at = t  # the app's FedAvg warns once it is built: the app module is imported and set up
            out["app import and set-up"].append(t - started_at)
        elif "Sending: train message" in line and got_at is not None:
            if app_at is not None:
                out["train and reply"].append(t - app_at)
            sent_at, got_at = t, None
    return out


def deployment_run(rounds: int, pull_interval: float, superexec_poll: float = 1.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="hf_trust_deploy_bench_"))
    link_port, *node_ports = _free_ports(3)
    home = tmp / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(superexec_poll)  # Flower's default 1 s
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    t0 = time.monotonic()
    procs = [
        Logged(
            [BIN / "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", link_port,
             "--disable-runtime-dependency-installation"],
            env, t0,
        )
    ]  # fmt: skip
    try:
        _wait_port(link_port, 180)
        for k, port in enumerate(node_ports):
            procs.append(
                Logged(
                    [BIN / "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}", "--host",
                     "127.0.0.1", "--port", port, "--node-config", f"partition-id={k} num-partitions=2"],
                    env, t0,
                )
            )  # fmt: skip
        out = tmp / "run"
        cfg = f"num-server-rounds={rounds} output-dir='{out}' num-clients=2 pull-interval={pull_interval}"
        run = subprocess.run(
            [BIN / "flwr", "run", APP, "bench", "--stream", "--run-config", cfg],
            env=env, cwd=tmp, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        if run.returncode != 0 or not (out / "history.json").exists():
            raise SystemExit(f"flwr run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    finally:
        for p in reversed(procs):
            p.stop()
    history = json.loads((out / "history.json").read_text())
    split = {k: [] for k in phases([])}
    for node in procs[1:]:
        for k, v in phases(node.lines).items():
            split[k] += v[1:]  # round 1 also installs the app and pays the first imports
    return {
        "pull_interval": pull_interval,
        "superexec_poll": superexec_poll,
        "rounds_s": [r["seconds"] for r in history],
        "phases": split,
    }


def report(runs: list[dict]) -> str:
    load = os.getloadavg()
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; flwr {_flwr_version()}; `examples/flower_app`, "
        "2 SuperNodes, SuperLink and SuperNodes on 127.0.0.1.",
        "",
        "| ServerApp reply poll (`pull-interval`) | SuperExec task poll | round times (s) | median, rounds 2–4 | pull wait | process launch "
        "| app import and set-up | train and reply |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        med = statistics.median(r["rounds_s"][1:4])
        ph = {k: statistics.median(v) if v else float("nan") for k, v in r["phases"].items()}
        lines.append(
            f"| {r['pull_interval']:g} s | {r['superexec_poll']:g} s | {', '.join(f'{s:.1f}' for s in r['rounds_s'])} | **{med:.1f} s** "
            f"| {ph['pull wait']:.1f} s | {ph['process launch']:.1f} s | {ph['app import and set-up']:.1f} s "
            f"| {ph['train and reply']:.1f} s |"
        )
    lines.append("")
    lines.append("Phases: medians per SuperNode and round (rounds 2..R), from the SuperNodes' time-stamped logs.")
    return "\n".join(lines)


def _flwr_version() -> str:
    from importlib.metadata import version

    return version("flwr")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    runs = [deployment_run(args.rounds, 3.0), deployment_run(args.rounds, 0.1), deployment_run(args.rounds, 0.1, 0.1)]
    md = report(runs)
    print(md)
    if not args.no_write:
        sys.path.insert(0, str(HERE))
        from flower_robustness import write_section

        write_section(md, "deployment")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
