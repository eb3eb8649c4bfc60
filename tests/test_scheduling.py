"""``make test``'s worker scheduling (tests/scheduling.py): a module stays on one worker, the longest go first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.scheduling import (
    FLOWER_SIMULATION_MODULES,
    FLOWER_SIMULATION_UNIT,
    LONGEST_FIRST,
    PER_TEST_MODULES,
    longest_first,
    unit_of,
)

ROOT = Path(__file__).resolve().parents[1]


def test_units_are_modules_the_flower_simulation_modules_and_single_long_tests():
    assert unit_of("tests/bye/test_backdoor.py::test_entropies_lie_in_their_range") == "tests/bye/test_backdoor.py"
    assert unit_of("tests/a.py::TestX::test_y[p::q]") == "tests/a.py"
    for module in FLOWER_SIMULATION_MODULES:
        assert unit_of(f"{module}::test_x[1]") == FLOWER_SIMULATION_UNIT
    for module in PER_TEST_MODULES:
        assert unit_of(f"{module}::test_x[True]") == f"{module}::test_x[True]"


def test_longest_first_moves_the_named_units_ahead_and_keeps_the_rest_in_order():
    faults = next(iter(PER_TEST_MODULES))
    named = [f"{faults}::test_b" if u == faults else u for u in LONGEST_FIRST]
    queue = ["tests/z.py", *reversed(named), "tests/a.py", f"{faults}::test_a"]
    ordered = longest_first(queue)
    # the per-test units of one module keep their queue order, at that module's place
    expected = [*named[: named.index(f"{faults}::test_b")], f"{faults}::test_b", f"{faults}::test_a"]
    expected += named[named.index(f"{faults}::test_b") + 1 :]
    assert ordered == [*expected, "tests/z.py", "tests/a.py"]


def test_the_flower_simulation_unit_is_exactly_the_modules_that_use_the_session_fixture():
    """The list in tests/scheduling.py against the source: a module missing from it would start the Simulation
    Engine on a second worker; a module listed without using the fixture would only lengthen that worker's unit."""
    uses = re.compile(r"^def test_\w+\([^)]*\bsimulated\b", re.MULTILINE)
    found = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "tests" / "flower").glob("test_*.py")
        if uses.search(p.read_text(encoding="utf-8"))
    }
    assert found == set(FLOWER_SIMULATION_MODULES)
    for name in LONGEST_FIRST:
        assert name == FLOWER_SIMULATION_UNIT or (ROOT / name).is_file(), name


def test_two_workers_keep_each_module_on_one_worker(tmp_path):
    """A real ``pytest -n 2 --dist loadgroup`` with the hook of tests/conftest.py: the tests of one module all report one worker (under
    pytest-xdist's own loadgroup on pytest 9.2 they were spread over both)."""
    # the suite's own hook, not a copy of it
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_xdist_make_scheduler  # noqa: F401\n")
    body = textwrap.dedent(
        """
        import os, pytest

        @pytest.mark.parametrize("i", range(6))
        def test_records_its_worker(i):
            with open(os.environ["WORKER_LOG"], "a") as f:
                f.write(f"{__name__} {os.environ['PYTEST_XDIST_WORKER']}\\n")
        """
    )
    for name in ("test_one", "test_two", "test_three"):
        (tmp_path / f"{name}.py").write_text(body)
    log = tmp_path / "workers.txt"
    env = {**os.environ, "WORKER_LOG": str(log), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        module, worker = line.split()
        workers.setdefault(module, set()).add(worker)
    assert set(workers) == {"test_one", "test_two", "test_three"}
    assert all(len(w) == 1 for w in workers.values()), workers
    assert len(set().union(*workers.values())) == 2, workers  # both workers were used
