"""A ServerApp whose SuperExec is gone ends even while its main thread waits on a lock without a timeout.

The process under test mimics ``flwr-serverapp --parent-pid P``: Flower's monitor (a side thread that calls
``signal.raise_signal(SIGINT)`` once P is gone), a SIGINT handler that restores the default and exits, and a main
thread blocked the way ``Grid.push_messages`` blocks when the SuperLink dies (push workers that retry forever).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hf_trust.trainers.federated.flower.parent_watch import parent_is_lost, parent_pid_from_argv

SERVERAPP = textwrap.dedent(
    """
    import os, signal, sys, threading, time

    out, watch = sys.argv[1], sys.argv[2] == "watch"
    parent = os.getppid()

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Flower's handler restores the default first
        with open(out, "w") as f:
            f.write("handled")
        os._exit(0)

    signal.signal(signal.SIGINT, handler)
    if watch:
        from hf_trust.trainers.federated.flower.parent_watch import watch_parent

        assert watch_parent(parent) is not None

    def flower_monitor():  # flwr.supercore.app_utils.start_parent_process_monitor, reduced
        while os.getppid() == parent:
            time.sleep(0.05)
        signal.raise_signal(signal.SIGINT)

    threading.Thread(target=flower_monitor, daemon=True).start()
    print(os.getpid(), flush=True)
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # blocked for good, as on the push workers of a dead SuperLink
    """
)

# The SuperExec: starts the ServerApp, reports its pid, then exits.
SUPEREXEC = textwrap.dedent(
    """
    import subprocess, sys
    with open(sys.argv[2] + ".log", "w") as log:  # not our stderr: the caller reads that to its end
        app = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]], stdout=subprocess.PIPE,
                               stderr=log, text=True)
    print(app.stdout.readline().strip(), flush=True)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _orphaned_serverapp(tmp_path: Path, mode: str) -> tuple[int, Path]:
    out = tmp_path / f"handled-{mode}"
    superexec = subprocess.run(
        [sys.executable, "-c", SUPEREXEC, SERVERAPP, str(out), mode],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert superexec.returncode == 0, superexec.stderr
    return int(superexec.stdout.strip()), out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_lost_parent_interrupts_a_main_thread_blocked_on_a_lock(tmp_path):
    pid, out = _orphaned_serverapp(tmp_path, "watch")
    end = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    log = Path(f"{out}.log")
    assert not _alive(pid) and out.read_text() == "handled", log.read_text() if log.exists() else ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_without_the_watch_flowers_own_monitor_leaves_the_process_running(tmp_path):
    """The limitation the watch exists for: the SIGINT raised from a side thread never reaches a blocked main
    thread."""
    pid, out = _orphaned_serverapp(tmp_path, "no-watch")
    try:
        time.sleep(5)
        assert _alive(pid) and not out.exists()
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_zombie_parent_is_lost_though_kill_0_finds_it(tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        end = time.monotonic() + 30
        while _alive(zombie.pid) and time.monotonic() < end:
            time.sleep(0.05)
        os.kill(zombie.pid, 0)  # no error: the pid still exists until it is reaped
        assert parent_is_lost(zombie.pid, was_child=False)
    finally:
        zombie.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not parent_is_lost(live.pid, was_child=False)
        assert parent_is_lost(live.pid, was_child=True)  # it is not our parent: we were re-parented
        assert not parent_is_lost(os.getppid(), was_child=True)
    finally:
        live.kill()
        live.wait()
    assert parent_is_lost(zombie.pid, was_child=False)  # reaped: no such process


def test_parent_pid_is_read_from_flowers_command_line():
    assert parent_pid_from_argv(["flwr-serverapp", "--insecure", "--parent-pid", "123"]) == 123
    assert parent_pid_from_argv(["flwr-serverapp", "--parent-pid=77"]) == 77
    assert parent_pid_from_argv(["flwr-serverapp", "--insecure"]) is None
    assert parent_pid_from_argv(["flwr-serverapp", "--parent-pid"]) is None
    assert parent_pid_from_argv(["flwr-serverapp", "--parent-pid", "x"]) is None
