"""``hf-trust flower-run``: a Flower run whose outcome is an exit status.

Flower 1.42's ``flwr run APP SUPERLINK --stream`` returns 0 once the log stream ends, whether the ServerApp
completed or failed (it prints the ServerApp's exit code in the logs but not in its own), so a CI script or a
scheduler cannot tell a failed federation from a finished one.  This module drives Flower's own command line in
three steps and reads the outcome the SuperLink records:

1. ``flwr run APP [SUPERLINK] --format json [--run-config ...]`` starts the run; its JSON holds the run id;
2. ``flwr log RUN_ID [SUPERLINK] --stream`` passes the run's logs through until the run ends;
3. ``flwr ls [SUPERLINK] --run-id RUN_ID --format json`` gives the run's final status (``finished:completed``,
   ``finished:failed``, ``finished:stopped``) and its details, polled a bounded number of times if the run has not
   finished when the stream ends.

It shells out rather than importing ``flwr`` (nothing here imports it), so ``hf-trust --help`` stays fast and the
SuperLink connection is exactly the one ``flwr`` itself would use (``FLWR_HOME``'s ``config.toml``).
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional

from hf_trust.errors import FederationError, FederationTimeout, HFTrustConfigError, MissingExtraError

#: Environment variable naming the ``flwr`` executable to use (overrides the search next to Python and on PATH).
FLWR_ENV = "HF_TRUST_FLWR"
COMPLETED = "finished:completed"
#: Bound of each short ``flwr`` call (start, status, stop): building and uploading the app, one request each.
CALL_TIMEOUT_S = 300.0

__all__ = ["COMPLETED", "FLWR_ENV", "FlowerRunFailed", "FlowerRunResult", "FlowerRunTimeout", "find_flwr", "flower_run"]


@dataclass(frozen=True)
class FlowerRunResult:
    """The final state of a run as the SuperLink records it (``flwr ls`` JSON)."""

    run_id: int
    status: str
    """``finished:completed``, ``finished:failed`` or ``finished:stopped``."""
    details: str = ""
    """``status-details``: the ServerApp's error or the reason the run was stopped (empty where Flower has none,
    which it lists as ``N/A``)."""

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def summary(self) -> str:
        """One line naming the run id, the status and its details."""
        details = " ".join(self.details.split())
        head = f"run {self.run_id}" + ("" if self.completed else " did not complete")
        return f"{head}: {self.status}" + (f" ({details})" if details else "")


class FlowerRunFailed(FederationError):
    """The run could not be started or followed to its end (the message says what happened and which run)."""

    def __init__(self, message: str, run_id: Optional[int] = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class FlowerRunTimeout(FlowerRunFailed, FederationTimeout):
    """The run did not finish within ``timeout``; it was stopped (``flwr stop``) if its id was known."""


def find_flwr(explicit: Optional[str] = None) -> str:
    """The ``flwr`` executable: ``explicit``, else ``$HF_TRUST_FLWR``, else the one next to ``sys.executable`` (the
    environment hf-trust runs in), else ``flwr`` on ``PATH``."""
    chosen = explicit or os.environ.get(FLWR_ENV)
    if chosen:
        path = shutil.which(chosen)
        if path is None:
            raise HFTrustConfigError(
                f"the flwr executable {chosen!r} (from {'flwr=' if explicit else '$' + FLWR_ENV}) does not exist or "
                f"is not executable; point it at Flower's `flwr` command or unset it."
            )
        return path
    here = Path(sys.executable).parent
    for name in ("flwr", "flwr.exe"):
        if (here / name).is_file() and os.access(here / name, os.X_OK):
            return str(here / name)
    path = shutil.which("flwr")
    if path is None:
        raise MissingExtraError(
            "hf-trust flower-run drives Flower's `flwr` command, which is not installed (not next to "
            f'{sys.executable}, not on PATH); install it with: pip install "hf-trust[flower]"'
        )
    return path


class _Deadline:
    """The ``timeout`` of the whole command; ``None`` is unbounded."""

    def __init__(self, timeout: Optional[float]) -> None:
        if timeout is not None and not timeout > 0:
            raise HFTrustConfigError(f"timeout must be a positive number of seconds, got {timeout!r}.")
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def left(self, cap: Optional[float] = None) -> Optional[float]:
        """Seconds left (at most ``cap``); ``None`` when neither bounds it."""
        if self._end is None:
            return cap
        left = max(0.0, self._end - time.monotonic())
        return left if cap is None else min(left, cap)

    @property
    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end


def _parse_json(text: str) -> Optional[dict[str, Any]]:
    """The JSON object ``flwr ... --format json`` printed (rich prints it indented, from a line's start)."""
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    decoder, lines = json.JSONDecoder(), text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("{"):
            try:
                value, _ = decoder.raw_decode("".join(lines[i:]))
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _error_text(text: str) -> str:
    """Flower's error message without rich's box drawing, on one line."""
    lines = [ln.strip().strip("│╭╮╰╯─ ").strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and ln != "Error"]
    return " ".join(lines)


class _Flwr:
    """One ``flwr`` executable and SuperLink connection name."""

    def __init__(self, exe: str, superlink: Optional[str]) -> None:
        self.exe = exe
        self.superlink = superlink

    def argv(self, command: str, *args: str, link_after: Sequence[str] = ()) -> list[str]:
        """``flwr COMMAND [LINK_AFTER...] [SUPERLINK] ARGS...`` (the connection is a positional argument)."""
        return [self.exe, command, *link_after, *([self.superlink] if self.superlink else []), *args]

    def json(self, argv: list[str], deadline: _Deadline, what: str, run_id: Optional[int]) -> dict[str, Any]:
        """Run a ``--format json`` command (at most :data:`CALL_TIMEOUT_S`, and never past ``deadline``); its JSON,
        or :class:`FlowerRunFailed` with Flower's own message.  ``subprocess.TimeoutExpired`` once ``deadline``
        has passed."""
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=deadline.left(CALL_TIMEOUT_S), stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            if deadline.expired:
                raise
            raise FlowerRunFailed(
                f"`{' '.join(argv[1:])}` ({what}) did not answer within {CALL_TIMEOUT_S:g} s", run_id
            ) from None
        payload = _parse_json(proc.stdout)
        if payload is None:
            raise FlowerRunFailed(
                f"`{' '.join(argv[1:])}` ({what}) exited {proc.returncode} without its JSON; output: "
                f"{_error_text(proc.stdout + proc.stderr)[-1500:] or '(none)'}",
                run_id,
            )
        if payload.get("success") is False:
            raise FlowerRunFailed(
                f"{what} failed: {_error_text(str(payload.get('error-message', '')))[-1500:]}"
                + (f" (run {run_id})" if run_id is not None else ""),
                run_id,
            )
        return payload


def _start_run(flwr: _Flwr, app: str, options: list[str], deadline: _Deadline) -> int:
    """Step 1: ``flwr run --format json``; the run id it reports."""
    argv = flwr.argv("run", "--format", "json", *options, link_after=[app])
    payload = flwr.json(argv, deadline, "starting the run (flwr run)", None)
    run_id = payload.get("run-id")
    try:
        return int(run_id)
    except (TypeError, ValueError):
        raise FlowerRunFailed(
            f"`flwr run` reported success but no run id (its JSON: {json.dumps(payload)[:1000]}); is this "
            f"Flower >= 1.42?"
        ) from None


def _copy(src: IO[bytes], dst: IO[str], tail: Optional[deque] = None) -> None:
    """Copy a child's output to ``dst`` as it comes (whole UTF-8 characters), keeping the last chunks in ``tail``."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in iter(lambda: src.read1(65536), b""):
        text = decoder.decode(chunk)
        if tail is not None:
            tail.append(text)
        dst.write(text)
        dst.flush()
    dst.write(decoder.decode(b"", final=True))
    dst.flush()


def _stream_logs(flwr: _Flwr, run_id: int, deadline: _Deadline, stdout: IO[str], stderr: IO[str]) -> Optional[str]:
    """Step 2: ``flwr log RUN_ID --stream`` until the run ends.  ``None`` when the stream ended cleanly, else
    Flower's error message (e.g. the SuperLink became unreachable); ``subprocess.TimeoutExpired`` past the
    deadline."""
    proc = subprocess.Popen(
        flwr.argv("log", "--stream", link_after=[str(run_id)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    err_tail: deque = deque(maxlen=64)
    copiers = [
        threading.Thread(target=_copy, args=(proc.stdout, stdout), daemon=True),
        threading.Thread(target=_copy, args=(proc.stderr, stderr, err_tail), daemon=True),
    ]
    for t in copiers:
        t.start()
    try:
        rc = proc.wait(timeout=deadline.left())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in copiers:
            t.join(timeout=5)
    return None if rc == 0 else (_error_text("".join(err_tail)) or f"`flwr log` exited {rc}")


def _status(flwr: _Flwr, run_id: int, deadline: _Deadline) -> FlowerRunResult:
    """``flwr ls --run-id RUN_ID --format json``: the run's current status."""
    argv = flwr.argv("ls", "--run-id", str(run_id), "--format", "json")
    payload = flwr.json(argv, deadline, f"reading the status of run {run_id} (flwr ls)", run_id)
    runs = payload.get("runs") or []
    if not runs or "status" not in runs[0]:
        raise FlowerRunFailed(f"`flwr ls --run-id {run_id}` listed no status for run {run_id}: {payload}", run_id)
    details = str(runs[0].get("status-details") or "")
    return FlowerRunResult(run_id, str(runs[0]["status"]), "" if details == "N/A" else details)


def _final_status(
    flwr: _Flwr, run_id: int, deadline: _Deadline, polls: int, interval: float, stream_error: Optional[str]
) -> FlowerRunResult:
    """Step 3: the run's status once it has finished, polled at most ``polls`` times ``interval`` s apart."""
    result = None
    for attempt in range(max(1, polls)):
        try:
            result = _status(flwr, run_id, deadline)
        except FlowerRunFailed as exc:
            if stream_error is not None:  # the SuperLink is gone: say what the stream saw first
                raise FlowerRunFailed(
                    f"lost the connection to the SuperLink while following run {run_id}: {stream_error}; and then {exc}",
                    run_id,
                ) from None
            raise
        if result.status.startswith("finished"):
            return result
        if attempt + 1 < polls:
            time.sleep(deadline.left(interval))
            if deadline.expired:
                raise subprocess.TimeoutExpired("flwr ls", deadline.timeout or 0)
    why = f"the log stream failed ({stream_error})" if stream_error else "the log stream ended"
    raise FlowerRunFailed(
        f"run {run_id} is still '{result.status}' {polls} status checks ({interval:g} s apart) after {why}; follow it "
        f"with `flwr ls --run-id {run_id}` or end it with `flwr stop {run_id}`",
        run_id,
    )


def _stop(flwr: _Flwr, run_id: int) -> str:
    """``flwr stop RUN_ID``; a phrase saying whether it worked."""
    try:
        flwr.json(flwr.argv("stop", "--format", "json", link_after=[str(run_id)]), _Deadline(60.0), "flwr stop", run_id)
    except (FlowerRunFailed, subprocess.TimeoutExpired) as exc:
        return f"stopping it with `flwr stop {run_id}` failed: {exc}"
    return f"stopped it (flwr stop {run_id})"


def _options(run_config: Sequence[str], federation_config: Sequence[str], federation: Optional[str]) -> list[str]:
    opts: list[str] = []
    for value in run_config:
        opts += ["--run-config", value]
    for value in federation_config:
        opts += ["--federation-config", value]
    if federation:
        opts += ["--federation", federation]
    return opts


def flower_run(
    app: str,
    superlink: Optional[str] = None,
    *,
    run_config: Sequence[str] = (),
    federation_config: Sequence[str] = (),
    federation: Optional[str] = None,
    timeout: Optional[float] = None,
    flwr: Optional[str] = None,
    status_polls: int = 10,
    poll_interval: float = 2.0,
    stdout: Optional[IO[str]] = None,
    stderr: Optional[IO[str]] = None,
) -> FlowerRunResult:
    """Start ``app`` on the SuperLink connection ``superlink`` (``None``: flwr's default), pass its logs through to
    ``stdout``/``stderr`` and return its final status.

    ``run_config`` / ``federation_config`` are ``flwr run``'s ``--run-config`` / ``--federation-config`` values
    (each may be given several times), ``federation`` its ``--federation``.  ``timeout`` (seconds) bounds the whole
    call: past it the run is stopped with ``flwr stop`` and :class:`FlowerRunTimeout` is raised.  A run that finished
    (completed, failed or stopped) is returned, check :attr:`FlowerRunResult.completed`; :class:`FlowerRunFailed`
    when the run could not be started, the SuperLink was lost, or the run has not finished ``status_polls`` checks
    (``poll_interval`` s apart) after its log stream ended.  ``flwr``: the executable (see :func:`find_flwr`).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    deadline = _Deadline(timeout)
    cli = _Flwr(find_flwr(flwr), superlink)
    run_id: Optional[int] = None
    try:
        run_id = _start_run(cli, app, _options(run_config, federation_config, federation), deadline)
        print(f"hf-trust: started run {run_id}; streaming its logs", file=stderr, flush=True)
        stream_error = _stream_logs(cli, run_id, deadline, stdout, stderr)
        return _final_status(cli, run_id, deadline, status_polls, poll_interval, stream_error)
    except subprocess.TimeoutExpired:
        if run_id is None:
            raise FlowerRunTimeout(
                f"`flwr run` did not report a run id within the timeout of {timeout:g} s; a run it started may be "
                f"left on the SuperLink (see `flwr ls`)"
            ) from None
        raise FlowerRunTimeout(
            f"run {run_id} did not finish within the timeout of {timeout:g} s; {_stop(cli, run_id)}", run_id
        ) from None
    except KeyboardInterrupt:
        if run_id is not None:
            print(
                f"hf-trust: interrupted; run {run_id} goes on on the SuperLink (end it with `flwr stop {run_id}`)",
                file=stderr,
                flush=True,
            )
        raise
