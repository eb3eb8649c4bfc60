"""``hf-trust flower-run``: a ``flwr run`` whose exit status is the run's outcome (flwr 1.42's ``flwr run --stream``
exits 0 even when the ServerApp fails).

The unit tests put a fake ``flwr`` (a Python script in ``tmp_path``, chosen with ``$HF_TRUST_FLWR``) in front of the
command: it prints what Flower's ``--format json`` commands print, some log lines for ``flwr log``, the ``flwr ls``
JSON the test chooses, and appends its arguments to a file, so each test also checks the exact calls.  The slow test
runs a real SuperLink and SuperNodes on 127.0.0.1 (the helpers of the deployment tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_trust.cli import main
from hf_trust.errors import HFTrustConfigError, MissingExtraError
from hf_trust.flower_run import FLWR_ENV, FlowerRunFailed, find_flwr, flower_run

FAKE_FLWR = """\
#!{python}
import json, os, sys, time

scenario = json.load(open(os.environ["FAKE_FLWR_SCENARIO"]))
calls = os.environ["FAKE_FLWR_CALLS"]
with open(calls, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
cmd = sys.argv[1]
if cmd == "run":
    sys.stdout.write(scenario["run"])
elif cmd == "log":
    for line in scenario.get("log", []):
        print(line, flush=True)
    time.sleep(scenario.get("log_sleep", 0))
    sys.stderr.write(scenario.get("log_stderr", ""))
    sys.exit(scenario.get("log_rc", 0))
elif cmd == "ls":
    n = sum(1 for line in open(calls) if json.loads(line)[0] == "ls")
    answers = scenario["ls"]
    sys.stdout.write(answers[min(n, len(answers)) - 1])
elif cmd == "stop":
    sys.stdout.write(json.dumps({{"success": True, "run-id": sys.argv[2]}}, indent=2) + "\\n")
"""

RUN_ID = 4242
APP = "examples/flower_app"


def _json(value: dict) -> str:
    """As Flower prints it: rich's print_json, indented."""
    return json.dumps(value, indent=2) + "\n"


def _started(run_id=RUN_ID) -> str:
    return _json(
        {"success": True, "run-id": None if run_id is None else str(run_id), "federation-id": "", "fab-id": "x"}
    )


def _listed(status: str, details: str = "", run_id=RUN_ID) -> str:
    return _json({"success": True, "runs": [{"run-id": str(run_id), "status": status, "status-details": details}]})


@pytest.fixture
def fake_flwr(tmp_path, monkeypatch):
    """``configure(**scenario)`` writes the scenario; ``calls()`` lists the argv of every call so far."""
    exe = tmp_path / "flwr"
    exe.write_text(FAKE_FLWR.format(python=sys.executable))
    exe.chmod(0o755)
    scenario, calls = tmp_path / "scenario.json", tmp_path / "calls.jsonl"
    monkeypatch.setenv(FLWR_ENV, str(exe))
    monkeypatch.setenv("FAKE_FLWR_SCENARIO", str(scenario))
    monkeypatch.setenv("FAKE_FLWR_CALLS", str(calls))

    class Fake:
        path = exe

        @staticmethod
        def configure(**kw):
            kw.setdefault("run", _started())
            kw.setdefault("log", ["INFO : round 1", "INFO : done"])
            scenario.write_text(json.dumps(kw))

        @staticmethod
        def calls() -> list[list[str]]:
            return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return Fake


def _expected_calls(superlink="hf-trust-test", ls_calls=1, extra_run=()):
    return [
        ["run", APP, superlink, "--format", "json", *extra_run],
        ["log", str(RUN_ID), superlink, "--stream"],
        *[["ls", superlink, "--run-id", str(RUN_ID), "--format", "json"]] * ls_calls,
    ]


def test_a_completed_run_exits_0_after_passing_the_logs_through(fake_flwr, capsys):
    fake_flwr.configure(ls=[_listed("finished:completed", "N/A")])
    rc = main(
        [
            "flower-run", APP, "hf-trust-test", "--run-config", "num-server-rounds=1 output-dir='out'",
            "-c", "seed=3", "--federation-config", "num-supernodes=2",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "INFO : round 1\nINFO : done\n" in out
    assert f"hf-trust: run {RUN_ID}: finished:completed\n" in err  # Flower's "N/A" details are left out
    extra = ["--run-config", "num-server-rounds=1 output-dir='out'", "--run-config", "seed=3"]
    assert fake_flwr.calls() == _expected_calls(extra_run=[*extra, "--federation-config", "num-supernodes=2"])


def test_without_a_superlink_name_flwr_picks_its_default(fake_flwr, capsys):
    # a stray line before the JSON (e.g. a warning printed before Flower redirects its output) is skipped
    fake_flwr.configure(run="Warning: something\n" + _started(), ls=[_listed("finished:completed")])
    assert main(["flower-run", APP]) == 0
    assert fake_flwr.calls() == [
        ["run", APP, "--format", "json"],
        ["log", str(RUN_ID), "--stream"],
        ["ls", "--run-id", str(RUN_ID), "--format", "json"],
    ]


@pytest.mark.parametrize(
    ("status", "details"),
    [
        ("finished:failed", "ServerApp raised HFTrustConfigError: SuperNode 7 has partition-id=5, outside ..."),
        ("finished:stopped", "stopped by user"),
    ],
)
def test_a_failed_or_stopped_run_exits_1_naming_the_run_status_and_details(fake_flwr, capsys, status, details):
    fake_flwr.configure(ls=[_listed(status, details)])
    rc = main(["flower-run", APP, "hf-trust-test"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "INFO : done" in out
    line = next(x for x in err.splitlines() if "did not complete" in x)
    assert str(RUN_ID) in line and status in line and details in line
    assert fake_flwr.calls() == _expected_calls()


def test_a_run_that_finishes_after_the_stream_ends_is_polled_until_it_has(fake_flwr):
    fake_flwr.configure(ls=[_listed("running"), _listed("running"), _listed("finished:completed")])
    start = time.monotonic()
    result = flower_run(APP, "hf-trust-test", status_polls=5, poll_interval=0.5)
    assert result.completed and result.run_id == RUN_ID
    assert time.monotonic() - start >= 2 * 0.5  # the interval between checks
    assert fake_flwr.calls() == _expected_calls(ls_calls=3)


def test_a_run_still_unfinished_after_the_bounded_polls_is_an_error(fake_flwr):
    fake_flwr.configure(ls=[_listed("running")])
    with pytest.raises(FlowerRunFailed, match=rf"run {RUN_ID} is still 'running' 3 status checks") as info:
        flower_run(APP, "hf-trust-test", status_polls=3, poll_interval=0.01)
    assert info.value.run_id == RUN_ID
    assert fake_flwr.calls() == _expected_calls(ls_calls=3)


def test_a_start_without_a_run_id_is_a_clear_error(fake_flwr, capsys):
    fake_flwr.configure(run=_started(run_id=None), ls=[_listed("finished:completed")])
    assert main(["flower-run", APP, "hf-trust-test"]) == 1
    assert "reported success but no run id" in capsys.readouterr().err
    assert fake_flwr.calls() == [["run", APP, "hf-trust-test", "--format", "json"]]


def test_a_refused_start_passes_on_flowers_message(fake_flwr, capsys):
    refused = {"success": False, "error-message": "Using SuperLink: x\n\nConnection to the SuperLink is unavailable."}
    fake_flwr.configure(run=_json(refused), ls=[_listed("finished:completed")])
    assert main(["flower-run", APP, "hf-trust-test"]) == 1
    err = capsys.readouterr().err
    assert "starting the run (flwr run) failed" in err and "Connection to the SuperLink is unavailable" in err
    assert len(fake_flwr.calls()) == 1


def test_losing_the_superlink_during_the_stream_exits_1_with_flowers_message(fake_flwr, capsys):
    box = "╭─ Error ─╮\n│ Connection to the SuperLink is unavailable. Please check  │\n╰──────╯\n"
    gone = _json({"success": False, "error-message": "Connection to the SuperLink is unavailable."})
    fake_flwr.configure(log=["INFO : round 1"], log_rc=1, log_stderr=box, ls=[gone])
    assert main(["flower-run", APP, "hf-trust-test"]) == 1
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("hf-trust: lost the connection"))
    assert f"following run {RUN_ID}" in line and "Connection to the SuperLink is unavailable. Please check" in line
    assert "│" not in line
    assert fake_flwr.calls() == _expected_calls()


def test_the_timeout_stops_the_run_and_exits_1(fake_flwr, capsys):
    fake_flwr.configure(log=["INFO : round 1"], log_sleep=60, ls=[_listed("finished:completed")])
    start = time.monotonic()
    rc = main(["flower-run", APP, "hf-trust-test", "--timeout", "3"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert rc == 1
    assert elapsed < 30
    assert f"run {RUN_ID} did not finish within the timeout of 3 s; stopped it (flwr stop {RUN_ID})" in err
    calls = fake_flwr.calls()
    assert calls[:2] == _expected_calls()[:2]
    assert calls[2:] == [["stop", str(RUN_ID), "hf-trust-test", "--format", "json"]]


def test_a_missing_flwr_is_an_install_error_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(FLWR_ENV, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # nothing next to it
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingExtraError, match=r'pip install "hf-trust\[flower\]"'):
        find_flwr()
    assert main(["flower-run", APP]) == 2
    assert 'pip install "hf-trust[flower]"' in capsys.readouterr().err


def test_flwr_is_found_next_to_python_first_then_on_path(tmp_path, monkeypatch):
    monkeypatch.delenv(FLWR_ENV, raising=False)
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    for folder in (venv, elsewhere):
        folder.mkdir()
        (folder / "flwr").write_text("#!/bin/sh\n")
        (folder / "flwr").chmod(0o755)
    monkeypatch.setenv("PATH", str(elsewhere))
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    assert find_flwr() == str(venv / "flwr")
    (venv / "flwr").unlink()
    assert find_flwr() == str(elsewhere / "flwr")


def test_a_bad_flwr_override_or_timeout_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(FLWR_ENV, str(tmp_path / "no-such-flwr"))
    with pytest.raises(HFTrustConfigError, match=r"no-such-flwr.*\$HF_TRUST_FLWR"):
        find_flwr()
    assert main(["flower-run", APP]) == 2
    with pytest.raises(HFTrustConfigError, match="timeout must be a positive"):
        flower_run(APP, timeout=0, flwr=sys.executable)


def test_hf_trust_cli_imports_no_flower_and_no_torch():
    code = (
        "import sys; import hf_trust.cli as c; c._parser();"
        "print(sorted(m for m in ('flwr', 'torch', 'hf_trust.flower_run') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- a real SuperLink ---------------------------------------------------------------------------------------------

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "flower_app"


def _hf_trust_flower_run(env: dict, cwd: Path, cfg: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hf_trust", "flower-run", str(EXAMPLE_APP), "hf-trust-test", "--run-config", cfg]
    return subprocess.run([*cmd, "--timeout", "420"], env=env, cwd=cwd, capture_output=True, text=True, timeout=480)


@pytest.mark.slow
def test_on_a_real_superlink_a_failed_serverapp_exits_1_and_a_completed_run_0(tmp_path):
    """One SuperNode of the app's two: the ServerApp's handshake gives up after 3 s (FederationTimeout), the run
    ends ``finished:failed``.  Flower's own ``flwr run --stream`` still exits 0; ``hf-trust flower-run`` exits 1.
    With the second SuperNode a one-round run completes and exits 0."""
    pytest.importorskip("flwr")
    from tests.flower.test_flower_deployment import _stop, _wait_port
    from tests.flower.test_flower_deployment_faults import _deployment

    tools, env, link, link_port, ports, supernode = _deployment(tmp_path)
    procs = [link]
    fail_cfg = f"num-server-rounds=1 output-dir='{tmp_path / 'failed'}' handshake-timeout=3"
    try:
        _wait_port(link_port, 180, procs)
        procs.append(supernode(0, ports[0], ""))
        plain = subprocess.run(
            [str(tools[2]), "run", str(EXAMPLE_APP), "hf-trust-test", "--stream", "--run-config", fail_cfg],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=420,
        )  # fmt: skip
        failed = _hf_trust_flower_run(env, tmp_path, fail_cfg)
        procs.append(supernode(1, ports[1], ""))
        completed = _hf_trust_flower_run(env, tmp_path, f"num-server-rounds=1 output-dir='{tmp_path / 'ok'}'")
    finally:
        for p in reversed(procs):
            _stop(p)
    plain_out = plain.stdout + plain.stderr
    # Flower's behaviour this command exists for: the ServerApp failed, `flwr run --stream` exits 0
    assert plain.returncode == 0 and "FederationTimeout" in plain_out, plain_out[-3000:]
    failed_out = failed.stdout + failed.stderr
    assert failed.returncode == 1, failed_out[-3000:]
    assert "finished:failed" in failed_out and "FederationTimeout" in failed.stdout, failed_out[-3000:]
    completed_out = completed.stdout + completed.stderr
    assert completed.returncode == 0, completed_out[-3000:]
    assert "finished:completed" in completed.stderr
    assert [r["round"] for r in json.loads((tmp_path / "ok" / "history.json").read_text())] == [1]
