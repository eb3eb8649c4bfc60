"""The package's shape: import layers, one installed namespace, the lazy front door."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.layering import NAMESPACE_ROOTS, check_tree

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_the_tree_follows_the_import_layers():
    violations = check_tree(ROOT)
    assert not violations, "import-layer violations:\n" + "\n".join(map(str, violations))


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_checker_catches_each_kind_of_forbidden_import(tmp_path):
    # A small tree with one forbidden import per rule, plus allowed ones that must stay silent.
    for pkg in (
        "hf_trust",
        "hf_trust/demo",
        "hf_trust/filters",
        "trainers",
        "trainers/fed",
        "peft_tuners",
        "hub_cards",
    ):
        _write(tmp_path, f"{pkg}/__init__.py", "")
    _write(tmp_path, "hf_trust/errors.py", "import os\n")
    _write(
        tmp_path, "hf_trust/atomic.py", "from hf_trust import errors\nfrom hf_trust.filters import bye\n"
    )  # base may use base only
    _write(tmp_path, "hf_trust/demo/runner.py", "from hf_trust.trainers.fed import core\n")  # harness -> library: fine
    _write(tmp_path, "hf_trust/assets.py", "")
    _write(
        tmp_path,
        "trainers/fed/core.py",
        """
        import torch
        from hf_trust.errors import HFTrustError
        from ..fed import other
        from . import other as o2

        def lazy():
            from ...demo import runner  # relative import up into the harness
        """,
    )
    _write(tmp_path, "trainers/fed/other.py", "from hf_trust import assets\n")  # library -> asset loaders
    _write(tmp_path, "peft_tuners/x.py", "from hf_trust import ThanoRAConfig\n")  # library -> front door
    _write(tmp_path, "hub_cards/y.py", "import metrics\n")  # pre-namespace name
    _write(tmp_path, "hf_trust/filters/z.py", "from tests.bye import toy\n")  # library -> tests
    _write(tmp_path, "examples/e.py", "from hf_trust.demo.recipes import bye\nimport hf_trust\n")
    _write(tmp_path, "benchmarks/b.py", "from hf_trust.demo.studies import bye\nfrom tests.bye import toy\n")
    found = {(v.path, v.target) for v in check_tree(tmp_path)}
    assert found == {
        ("hf_trust/atomic.py", "hf_trust.filters"),
        ("trainers/fed/core.py", "hf_trust.demo.runner"),
        ("trainers/fed/other.py", "hf_trust.assets"),
        ("peft_tuners/x.py", "hf_trust"),
        ("hub_cards/y.py", "metrics"),
        ("hf_trust/filters/z.py", "tests.bye"),
        ("examples/e.py", "hf_trust.demo.recipes"),
        ("benchmarks/b.py", "tests.bye"),
    }


def test_pyproject_installs_every_package_folder_under_hf_trust():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert conf["package-dir"] == {v: k for k, v in NAMESPACE_ROOTS.items()}
    expected = set()
    for folder, name in NAMESPACE_ROOTS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            expected.add(".".join((name, *rel)))
    assert set(conf["packages"]) == expected


def test_front_door_names_are_the_subpackage_exports():
    import hf_trust

    for name, module in hf_trust._LAZY.items():
        mod = importlib.import_module(module)
        assert name in getattr(mod, "__all__", ()), f"{module} does not export {name}"
        assert getattr(hf_trust, name) is getattr(mod, name)
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        hf_trust.NotAThing  # noqa: B018


def _run(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", **env}
    full_env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600, env=full_env
    )


def test_import_hf_trust_is_no_heavier_than_peft(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import peft
        before = set(sys.modules)
        import hf_trust
        extra = sorted(m for m in set(sys.modules) - before
                       if not m.startswith("hf_trust") and m.split(".")[0] not in sys.stdlib_module_names)
        print("EXTRA", extra)
        """
    )
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("EXTRA"))
    extra = sorted({m.split(".")[0] for m in eval(line[len("EXTRA ") :])})  # noqa: S307 - our own print
    assert not extra, f"`import hf_trust` pulls in packages that PEFT does not: {extra}"


SHADOWS = ("metrics", "trainers", "peft_tuners", "hub_cards", "filters", "agents")


def test_user_modules_named_like_our_folders_do_not_shadow_ours(tmp_path):
    # A user's working directory with its own metrics.py, trainers.py, ... (each would fail loudly if imported).
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the user file {name}.py was imported')\n")
    (tmp_path / "hf_cache").mkdir()
    code = textwrap.dedent(
        """
        import evaluate, hf_trust
        from hf_trust.trainers.federated import FedAvg
        from hf_trust.hub_cards import push_adapter
        from hf_trust.peft_tuners.thanora import ThanoRAConfig
        assert hf_trust.GGEURTrainer.__module__.startswith("hf_trust.trainers.ggeur")
        metric = evaluate.load(hf_trust.metric_path("cot_kinetics"))
        print("OK", type(metric).__name__)
        """
    )
    proc = _run(code, tmp_path, HF_HOME=str(tmp_path / "hf_cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
