"""A real deployment that loses a SuperNode: a SuperLink and two SuperNodes on 127.0.0.1, SuperNode 1 killed after
round 1.  Every wait of the ServerApp is bounded by the run config: the run ends within the bound, the loss is in
``history.json`` (with the last global parameters), and a SuperNode restarted with the same ``partition-id`` is used
again."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

pytest.importorskip("flwr")

from tests.flower.flower_fixtures import EXAMPLE_APP  # noqa: E402
from tests.flower.test_flower_deployment import BIN, _free_ports, _start, _stop, _wait_port  # noqa: E402

NODE_TIMEOUT_S = 40
ROUND_TIMEOUT_S = 60


def _deployment(tmp_path):
    tools = [BIN / "flower-superlink", BIN / "flower-supernode", BIN / "flwr"]
    if not all(t.exists() for t in tools):
        pytest.skip("the Flower executables are not installed next to this Python")
    link_port, *node_ports = _free_ports(4)
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "hf-trust-test"\n\n[superlink.hf-trust-test]\naddress = "127.0.0.1:{link_port}"\n'
        "insecure = true\n"
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }

    def supernode(k: int, port: int, tag: str) -> subprocess.Popen:
        return _start(
            [
                tools[1], "--insecure", "--superlink", f"127.0.0.1:{link_port}", "--host", "127.0.0.1",
                "--port", port, "--node-config", f"partition-id={k} num-partitions=2", "--max-wait-time", "300",
            ],
            tmp_path / f"supernode{k}{tag}.log",
            env,
        )  # fmt: skip

    link = _start(
        [
            tools[0],
            "--insecure",
            "--host",
            "127.0.0.1",
            "--port",
            link_port,
            "--disable-runtime-dependency-installation",
        ],
        tmp_path / "superlink.log",
        env,
    )
    return tools, env, link, link_port, node_ports, supernode


def _run(tools, env, out, rounds, cwd):
    cfg = (
        f"num-server-rounds={rounds} output-dir='{out}' num-clients=2 node-timeout={NODE_TIMEOUT_S} "
        f"round-timeout={ROUND_TIMEOUT_S} handshake-timeout=300"
    )
    return subprocess.Popen(
        [str(tools[2]), "run", str(EXAMPLE_APP), "hf-trust-test", "--stream", "--run-config", cfg],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return
        time.sleep(0.5)
    raise AssertionError(f"{path} did not appear within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("restart", [False, True])
def test_a_lost_supernode_ends_the_run_within_the_bound_or_is_used_again(tmp_path, restart):
    tools, env, link, link_port, ports, supernode = _deployment(tmp_path)
    procs = [link]
    out = tmp_path / "run"
    rounds = 4
    try:
        _wait_port(link_port, 180, procs)
        nodes = [supernode(0, ports[0], ""), supernode(1, ports[1], "")]
        procs += nodes
        run = _run(tools, env, out, rounds, tmp_path)
        _wait_for(out / "checkpoint-1" / "checkpoint.json", 600)
        _stop(nodes[1])
        killed_at = time.monotonic()
        if restart:
            time.sleep(2)
            procs.append(supernode(1, ports[2], "-restarted"))
        try:
            stdout, _ = run.communicate(timeout=600)
        finally:
            if run.poll() is None:
                run.kill()
        elapsed = time.monotonic() - killed_at
    finally:
        for p in reversed(procs):
            _stop(p)
    history = json.loads((out / "history.json").read_text())
    assert (out / "global_params.pt").is_file()
    assert [r["round"] for r in history] == list(range(1, rounds + 1)), stdout[-3000:]
    lost = [r for r in history[1:] if 1 in r.get("timed_out_clients", []) or 1 in r.get("node_timeout", [])]
    if not restart:
        # every later round either timed out on client 1 or waited node-timeout for it, then the run ended
        assert lost, history
        assert all(r["clients"] in ([0], [0, 1], []) for r in history[1:])
        # the ServerApp ends with FederationTimeout naming the rounds and partitions (flwr 1.42's `flwr run --stream`
        # reports the ServerApp's exit code 201 in its output but itself exits 0)
        assert "FederationTimeout" in stdout and "partitions [1]" in stdout, stdout[-3000:]
        assert history[-1]["node_timeout"] == [1] and not history[-1]["aggregated"]
        assert elapsed < (rounds - 1) * (NODE_TIMEOUT_S + ROUND_TIMEOUT_S) + 300
    else:
        # the restarted SuperNode (new node id, same partition-id) trains again in a later round
        last = history[-1]
        assert last["clients"] == [0, 1] and last["failed_clients"] == [] and last["aggregated"], history
        assert all(1 not in r.get("timed_out_clients", []) for r in history[-1:])
