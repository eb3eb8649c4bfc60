"""The Deployment Engine for real: a SuperLink and two SuperNodes as separate processes on 127.0.0.1 (insecure mode,
free ports), ``flwr run examples/flower_app``; the result equals the Simulation Engine's run of the same app.

SuperNode 1 is started with ``fail-at-round=2`` (the app's fault-injection mod): round 2 must record its failure,
Flower-style, and aggregate client 0 alone.  Every process is started in its own session and the whole group is
stopped in ``finally``; each wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from tests.flower.flower_fixtures import EXAMPLE_APP  # noqa: E402

BIN = Path(sys.executable).parent
DEADLINE_S = 900  # the whole `flwr run`; each clientapp process imports torch and hf-trust (slow on a busy machine)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_port(port: int, timeout: float, procs: list[subprocess.Popen]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a Flower process exited during start-up")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


def _start(cmd: list, log: Path, env: dict) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process below
    p = subprocess.Popen([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    p._log = fh  # type: ignore[attr-defined]
    return p


def _stop(p: subprocess.Popen) -> None:
    """SIGTERM to the process group we started (pgid = its pid), SIGKILL after 15 s."""
    try:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        else:  # the leader is gone; its group may not be
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    except ProcessLookupError:
        pass
    finally:
        p._log.close()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_superlink_and_two_supernodes_run_the_app_and_equal_the_simulation(tmp_path, simulated):
    tools = [BIN / "flower-superlink", BIN / "flower-supernode", BIN / "flwr"]
    if not all(t.exists() for t in tools):
        pytest.skip("the Flower executables are not installed next to this Python")
    link_port, node0_port, node1_port = _free_ports(3)
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "hf-trust-test"\n\n[superlink.hf-trust-test]\naddress = "127.0.0.1:{link_port}"\n'
        "insecure = true\n"
    )
    out = tmp_path / "run"
    env = {
        **os.environ,
        "FLWR_HOME": str(home),  # apps, logs and the connection live in the test's folder
        "FLWR_TELEMETRY_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # they start flower-superexec, flwr-clientapp ...
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            _start(
                [
                    tools[0], "--insecure", "--host", "127.0.0.1", "--port", link_port,
                    "--disable-runtime-dependency-installation",
                ],
                tmp_path / "superlink.log",
                env,
            )
        )  # fmt: skip
        _wait_port(link_port, 180, procs)
        for k, port in enumerate((node0_port, node1_port)):
            node_config = f"partition-id={k} num-partitions=2" + (" fail-at-round=2" if k == 1 else "")
            procs.append(
                _start(
                    [
                        tools[1], "--insecure", "--superlink", f"127.0.0.1:{link_port}", "--host", "127.0.0.1",
                        "--port", port, "--node-config", node_config, "--max-wait-time", "300",
                    ],
                    tmp_path / f"supernode{k}.log",
                    env,
                )
            )  # fmt: skip
        run = subprocess.run(
            [str(tools[2]), "run", str(EXAMPLE_APP), "hf-trust-test", "--stream",
             "--run-config", f"num-server-rounds=2 output-dir='{out}'"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE_S,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert all(p.poll() is None for p in procs), "a SuperLink/SuperNode died during the run"
    finally:
        for p in reversed(procs):
            _stop(p)

    import torch

    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history] == [1, 2]
    r1, r2 = history
    assert r1["clients"] == [0, 1] and r1["failed_clients"] == [] and r1["timed_out_clients"] == []
    # Flower's semantics for a failing client: an error reply, recorded, left out of the aggregate
    assert r2["failed_clients"] == [1] and r2["aggregated"]
    assert "injected fault on partition 1 in round 2" in r2["errors"]["1"]
    assert json.loads((out / "partition.json").read_text())["method"] == "dirichlet"

    # the same app on the Simulation Engine (tests/flower/conftest.py)
    sim = simulated["example_app"]
    assert sim.error is None, sim.error
    after_r1 = torch.load(out / "checkpoint-1" / "global_params.pt")
    sim_after_r1 = sim.round_arrays[2]["global"]
    for k in sim_after_r1:
        np.testing.assert_allclose(after_r1[k].numpy(), sim_after_r1[k], rtol=0, atol=1e-5)
    assert r1["train_loss"] == pytest.approx(sim.history[0]["train_loss"], abs=1e-5)
    # round 2 aggregated client 0 alone: its model, as the simulation's client 0 trained it from the same start
    final = torch.load(out / "global_params.pt")
    client0 = sim.round_arrays[2]["clients"][0]
    for k in client0:
        np.testing.assert_allclose(final[k].numpy(), client0[k], rtol=0, atol=1e-5)
