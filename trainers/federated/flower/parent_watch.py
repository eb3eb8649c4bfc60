"""Make a deployment's ServerApp end when its SuperExec is gone, even while its main thread is blocked.

``flwr-serverapp --parent-pid P`` runs a thread that raises ``SIGINT`` once process ``P`` (the SuperExec) is gone;
Flower's handler then saves, logs and exits. ``signal.raise_signal`` delivers the signal to the thread that calls
it, and Python runs a handler only on the main thread, between bytecodes. A main thread that waits on a lock
without a timeout is never woken: with the SuperLink SIGKILLed in the middle of ``Grid.push_messages``, the main
thread waits for push workers that retry the dead SuperLink forever, and the process lived on indefinitely
(``tests/flower/test_flower_deployment_faults.py``). :func:`watch_parent` delivers ``SIGINT`` to the main thread
itself (``pthread_kill`` interrupts that wait), and only while the handler installed at the start has not run.
It also notices a parent that has become a zombie, which ``kill(pid, 0)`` still reports alive: in a container
whose init does not reap orphans, Flower's own check never fires.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Optional

#: Seconds between checks of the parent; Flower's own monitor polls every 0.2 s.
CHECK_INTERVAL_S = 0.5
#: Seconds after the parent is lost before the main thread is interrupted, so Flower's own path goes first.
GRACE_S = 1.0


def parent_pid_from_argv(argv: Sequence[str]) -> Optional[int]:
    """The ``--parent-pid`` that Flower's SuperExec passes to ``flwr-serverapp`` (``None`` when absent)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--parent-pid="):
            value = arg.partition("=")[2]
        elif arg == "--parent-pid" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        try:
            return int(value)
        except ValueError:
            return None
    return None


def parent_is_lost(parent_pid: int, was_child: bool) -> bool:
    """Whether process ``parent_pid`` has ended: no process has that id, it is a zombie, or (``was_child``: it
    was this process's parent) this process has been re-parented."""
    if was_child and os.getppid() != parent_pid:
        return True
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    try:
        with open(f"/proc/{parent_pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):  # no procfs: existence is all we know
        return False


def watch_parent(parent_pid: Optional[int] = None) -> Optional[threading.Event]:
    """Start a daemon thread that interrupts the main thread with ``SIGINT`` once ``parent_pid`` is lost.

    ``parent_pid`` defaults to the ``--parent-pid`` of this process's command line; without one (an in-process
    simulation, a ServerApp run some other way) nothing is started and ``None`` is returned. Otherwise the returned
    event stops the thread. The thread sends nothing once the ``SIGINT`` handler installed when it started has been
    replaced (Flower's handler restores the default as its first step), so a handled exit is not interrupted."""
    if parent_pid is None:
        parent_pid = parent_pid_from_argv(sys.argv)
    if parent_pid is None or threading.current_thread() is not threading.main_thread():
        return None
    main = threading.main_thread().ident
    was_child = os.getppid() == parent_pid
    handler = signal.getsignal(signal.SIGINT)
    stop = threading.Event()

    def run() -> None:
        lost_for = 0.0
        while not stop.wait(CHECK_INTERVAL_S):
            if not parent_is_lost(parent_pid, was_child):
                continue
            lost_for += CHECK_INTERVAL_S
            if lost_for < GRACE_S:
                continue
            if signal.getsignal(signal.SIGINT) is not handler:
                return  # the exit path has begun
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=run, name="hf-trust-parent-watch", daemon=True).start()
    return stop
