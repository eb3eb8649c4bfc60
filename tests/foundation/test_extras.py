"""Optional extras: importing a method whose extra is missing raises MissingExtraError naming the module that
failed and the install step; a skip for a missing module fails the suite unless README marks it optional."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_trust.errors import MissingExtraError, require_extra

ROOT = Path(__file__).resolve().parents[2]


def _import_without(blocked: list[str], target: str) -> str:
    """Import ``target`` in a fresh interpreter in which every module of ``blocked`` is not installed."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None  # what `import name` sees when it is not installed
        from hf_trust.errors import MissingExtraError
        try:
            __import__({target!r})
        except MissingExtraError as exc:
            assert isinstance(exc, ImportError)
            print("MISSING-EXTRA:", exc)
        else:
            print("IMPORTED")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize(
    ("blocked", "target", "extra"),
    [
        (["torch_geometric"], "hf_trust.trainers.acgkd", "graphs"),
        (["flwr"], "hf_trust.trainers.federated.flower", "flower"),
    ],
)
def test_a_method_without_its_extra_names_the_module_and_the_extra(blocked, target, extra):
    out = _import_without(blocked, target)
    assert "MISSING-EXTRA:" in out, out
    assert repr(blocked[0]) in out and f'pip install "hf-trust[{extra}]"' in out, out


def test_a_figure_without_matplotlib_names_the_plots_extra():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["matplotlib"] = None
        from hf_trust.errors import MissingExtraError
        from hf_trust.peft_tuners.thanora.report import plot_allocation
        try:
            plot_allocation([{"ranks": {"a": 1}}])
        except MissingExtraError as exc:
            print("MISSING-EXTRA:", exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "MISSING-EXTRA:" in proc.stdout and 'pip install "hf-trust[plots]"' in proc.stdout, proc.stderr[-2000:]


def test_the_core_imports_without_any_extra():
    out = _import_without(["torch_geometric", "flwr", "trl", "matplotlib", "gguf", "deepspeed"], "hf_trust.peft_tuners")
    assert "IMPORTED" in out, out
    for core in ("hf_trust.trainers.federated", "hf_trust.filters", "hf_trust.metrics.cot_kinetics"):
        assert "IMPORTED" in _import_without(["torch_geometric", "flwr", "trl", "matplotlib", "gguf"], core)


def test_a_package_whose_own_dependency_is_missing_names_that_dependency(monkeypatch):
    """flwr_datasets installed --no-deps without seaborn: the fix is `pip install seaborn`, not a reinstall."""
    monkeypatch.setitem(sys.modules, "seaborn", None)
    for name in list(sys.modules):
        if name == "flwr_datasets" or name.startswith("flwr_datasets."):
            monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError, match=r"'seaborn'.*pip install seaborn"):
        require_extra("flwr_datasets", extra="flower", feature="the interop")


def test_a_missing_module_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"'no_such_module_xyz'.*hf-trust\[graphs\]"):
        require_extra("no_such_module_xyz", extra="graphs", feature="a feature")


def test_a_skip_for_a_missing_module_fails_the_suite(tmp_path):
    """The conftest hook turns `importorskip` of a module README does not list as optional into a failure."""
    (tmp_path / "test_skip.py").write_text(
        "import pytest\n\ndef test_needs_it():\n    pytest.importorskip('no_such_module_xyz')\n"
    )
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_runtest_makereport, pytest_make_collect_report  # noqa: F401\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_skip.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-2000:]
    assert "no_such_module_xyz" in proc.stdout and "Optional test modules" in proc.stdout
