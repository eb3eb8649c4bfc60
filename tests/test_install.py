"""The distribution as a user installs it: a wheel with one top-level package, ranged metadata, and an
install into an existing stack that leaves the user's packages alone."""

from __future__ import annotations

import email.parser
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.layering import NAMESPACE_ROOTS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.install


def _committed_tree(work: Path) -> Path:
    """The committed tree (what a clean clone holds), extracted under ``work/src``."""
    src = work / "src"
    src.mkdir()
    archive = work / "head.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), "HEAD"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    return src


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the committed tree (what a clean clone holds), without build isolation."""
    work = tmp_path_factory.mktemp("wheel")
    src = _committed_tree(work)
    dist = work / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = dist.glob("hf_trust-*.whl")
    return whl


def test_wheel_has_only_the_hf_trust_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"hf_trust"}
    # every module of the repository folders is in the wheel, under the namespace, with its data files
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True).stdout.split()
    expected = set()
    for rel in tracked:
        top, _, rest = rel.partition("/")
        wanted = rel.endswith((".py", ".j2")) or rel == "metrics/cot_kinetics/README.md"
        if top in NAMESPACE_ROOTS and rest and wanted:
            expected.add(NAMESPACE_ROOTS[top].replace(".", "/") + "/" + rest)
    assert expected <= set(names), sorted(expected - set(names))


def test_wheel_metadata_is_ranged(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist")
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime and all("==" not in r for r in runtime), runtime
    assert not any(r.lower().startswith("pytest") for r in runtime)
    torch_req = next(r for r in runtime if r.startswith("torch"))
    assert "+cpu" not in torch_req
    extras = set(meta.get_all("Provides-Extra"))
    assert {"graphs", "agents", "plots", "demo", "deepspeed", "flower", "all", "test"} <= extras
    # a lean core: each method's heavy dependency is in its extra, not in every install
    names = {re.split(r"[ ;<>=!\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in runtime}
    assert not names & {"torch-geometric", "trl", "gguf", "matplotlib", "flwr", "deepspeed"}, names
    assert meta.get("License-Expression") == "Apache-2.0" and "LICENSE" in meta.get_all("License-File")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The source distribution built from the committed tree."""
    work = tmp_path_factory.mktemp("sdist")
    src = _committed_tree(work)
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "-o", str(work / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tgz,) = (work / "dist").glob("hf_trust-*.tar.gz")
    return tgz


def test_sdist_holds_what_the_readme_points_to_and_no_partial_test_suite(sdist):
    """The README (also the index page) only points users to files the source distribution has; the test suite
    is left out whole (README: it lives in the source repository) rather than shipped half."""
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert not any(n.startswith("tests/") for n in names), sorted(n for n in names if n.startswith("tests/"))
    assert {"LICENSE", "Makefile", "constraints.txt", "constraints-floor.txt", "pyproject.toml"} <= names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "test suite lives in the source repository" in readme
    tracked = set(subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True).stdout.split())
    folders = {str(Path(t).parent) for t in tracked}
    referenced = set()
    for token in re.findall(r"`([^`\s]+)`", readme):
        path = token.split("::")[0].rstrip("/")
        if path.startswith("tests") or path.startswith(".venv"):
            continue
        if path in tracked or path in folders:
            referenced.add(path)
    missing = [p for p in sorted(referenced) if p not in names and not any(n.startswith(p + "/") for n in names)]
    assert referenced and not missing, missing


def _freeze(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out)}


#: stacks a user may already have: the newest torch alone, and the floor stack of pyproject.toml's lower bounds
#: (transformers 4, peft 0.21, datasets 4, huggingface_hub 0.x: the install must not upgrade any of them)
STACKS = {
    "torch-only": ["six"],
    "floor": [
        "transformers==4.57.6",
        "peft==0.21.0",
        "datasets==4.8.5",
        "accelerate==1.14.0",
        "huggingface_hub==0.36.2",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("stack", sorted(STACKS))
def test_wheel_installs_into_an_existing_stack_without_changing_it(wheel, tmp_path, stack):
    """A fresh venv that already holds torch (and the stack's packages): installing the wheel adds
    packages but changes none of those already there, and ``pip check`` is clean afterwards."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    torch_version = __import__("torch").__version__.split("+")[0]
    # A clean environment: earlier tests in the same session (Ray starts, for one) may have put the project's
    # own venv on PYTHONPATH, which would make the fresh venv see every package of ours.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # --no-compile: byte-compiling every file of torch and the stack cost up to a minute per stack on 2 cores, and
    # neither the freeze diff nor the import check below depends on it.
    pre = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-compile", f"torch=={torch_version}", *STACKS[stack]],
        capture_output=True,
        text=True,
        timeout=2400,
        env=env,
    )
    assert pre.returncode == 0, pre.stderr[-3000:]
    before = _freeze(py)
    inst = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-compile", str(wheel)],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
    )
    assert inst.returncode == 0, inst.stderr[-3000:]
    after = _freeze(py)
    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    assert not changed, f"pip changed preinstalled packages: {changed}"
    assert "hf-trust" in after
    check = subprocess.run([str(py), "-m", "pip", "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    # The installed (non-editable) package works from a folder holding the user's own metrics.py etc.
    user = tmp_path / "user"
    user.mkdir()
    for name in ("metrics", "trainers", "peft_tuners", "hub_cards"):
        (user / f"{name}.py").write_text(f"raise ImportError('the user file {name}.py was imported')\n")
    code = textwrap.dedent(
        """
        import evaluate, hf_trust
        from hf_trust.trainers.federated import FedAvg
        from hf_trust import ThanoRAConfig, LoRASculptConfig
        assert "site-packages" in hf_trust.__file__
        evaluate.load(hf_trust.metric_path("cot_kinetics"))
        print("OK")
        """
    )
    run_env = {**env, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([str(py), "-c", code], cwd=user, capture_output=True, text=True, timeout=600, env=run_env)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
