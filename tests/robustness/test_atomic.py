"""The one atomic-write helper every writer uses: a failure or a kill mid-write leaves the old file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from hf_trust.atomic import atomic_directory, atomic_path, atomic_save, atomic_write_json, atomic_write_text


def _siblings(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "history.json"
    target.write_text("old")
    atomic_write_json(target, {"round": 3})
    assert target.read_text() == '{\n  "round": 3\n}\n'
    assert _siblings(tmp_path) == ["history.json"]


def test_failure_mid_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "partition.json"
    target.write_text("previous complete content")

    def half_then_fail(path):
        path.write_text("half of the new conte")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save(target, half_then_fail)
    assert target.read_text() == "previous complete content"
    assert _siblings(tmp_path) == ["partition.json"]


def test_written_files_and_folders_get_the_mode_of_a_plain_write(tmp_path):
    plain_file = tmp_path / "plain.txt"
    plain_file.write_text("x")
    plain_dir = tmp_path / "plain_dir"
    plain_dir.mkdir()
    atomic_write_text(tmp_path / "atomic.txt", "x")
    with atomic_directory(tmp_path / "atomic_dir") as staging:
        (staging / "a").write_text("a")
    assert os.stat(tmp_path / "atomic.txt").st_mode == os.stat(plain_file).st_mode
    assert os.stat(tmp_path / "atomic_dir").st_mode == os.stat(plain_dir).st_mode


def test_directory_swap_is_all_or_nothing(tmp_path):
    target = tmp_path / "report"
    target.mkdir()
    (target / "README.md").write_text("old report")
    with pytest.raises(ValueError):
        with atomic_directory(target) as staging:
            (staging / "README.md").write_text("new repo")
            raise ValueError("recipe crashed")
    assert (target / "README.md").read_text() == "old report"
    assert _siblings(tmp_path) == ["report"]
    with atomic_directory(target) as staging:
        (staging / "README.md").write_text("new report")
    assert _siblings(target) == ["README.md"] and (target / "README.md").read_text() == "new report"
    assert _siblings(tmp_path) == ["report"]


def test_a_process_killed_mid_write_leaves_the_old_file_readable(tmp_path):
    target = tmp_path / "server.pt"
    target.write_bytes(b"complete checkpoint")
    code = textwrap.dedent(
        f"""
        import os, signal
        from hf_trust.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == -9
    assert target.read_bytes() == b"complete checkpoint"
    # the only trace is a hidden temporary file that no reader opens
    leftovers = [n for n in _siblings(tmp_path) if n != "server.pt"]
    assert leftovers and all(n.startswith(".server.pt.") and n.endswith(".tmp") for n in leftovers)


def test_atomic_path_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("x")
    assert target.read_text() == "x"
