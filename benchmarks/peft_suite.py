"""PEFT's own tuner tests, run with hf-trust's LoRA-family configs in place of ``LoraConfig``.

Downloads the source distribution of the installed PEFT version (it ships ``tests/``) into a temporary
folder, then runs ``tests/test_custom_models.py`` and ``tests/test_config.py`` once per config:

* ``lora`` — the reference: only the parametrised rows whose config class is ``LoraConfig``;
* ``lorasculpt`` / ``thanora`` — the same rows with ``LoRASculptConfig`` / ``ThanoRAConfig`` substituted for
  ``LoraConfig`` (ThanoRA also gets its one mandatory field, ``task_names``, added to the row's kwargs).

Tests that are not parametrised with a config class, and rows of other tuners, are deselected: they would
run identically in every pass.  The substitution happens at collection time through a pytest plugin (this
module, loaded with ``-p``), so PEFT's files are never edited or copied into the repository.

Usage::

    python benchmarks/peft_suite.py                      # all three passes, writes the results file
    python benchmarks/peft_suite.py --configs lorasculpt -k "test_delete_adapter"

The result file lists, per config, passed/failed/errored/skipped counts and every row where the config
fails while plain LoRA passes.  Slow (thousands of tests per pass): not part of ``make test``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from hf_trust.errors import HFTrustFileNotFoundError

ENV = "HF_TRUST_PEFT_SUITE_CONFIG"
CONFIGS = ("lora", "lorasculpt", "thanora")
FILES = ("tests/test_custom_models.py", "tests/test_config.py")
CLASS_NAMES = {"lora": "LoraConfig", "lorasculpt": "LoRASculptConfig", "thanora": "ThanoRAConfig"}
#: Fields added to each row's kwargs dict (the row's own values win).  ThanoRA: its one mandatory field.
#: LoRASculpt runs with its defaults (ρ = 0.1 included), as a user who swaps the config class would.
EXTRA_KWARGS: dict[str, dict[str, Any]] = {
    "thanora": {"task_names": ["task_a", "task_b"]},
}
#: Argument names under which PEFT's parametrisations pass the config's kwargs (``config_kwargs_1`` and
#: ``config_kwargs_2`` in the multiple-adapter tests: every such name gets the extra fields).
KWARG_ARGNAMES = ("config_kwargs", "mandatory_kwargs")


def _is_kwargs_argname(argname: str) -> bool:
    return argname in KWARG_ARGNAMES or argname.startswith("config_kwargs")


# ---------------------------------------------------------------------------------------------- plugin part
@functools.cache  # one class object per config: rows are recognised by identity
def _target_class(name: str) -> type:
    from peft import LoraConfig

    if name == "lora":
        return LoraConfig
    import hf_trust.peft_tuners.lorasculpt as lorasculpt
    import hf_trust.peft_tuners.thanora as thanora

    cls = {"lorasculpt": lorasculpt.LoRASculptConfig, "thanora": thanora.ThanoRAConfig}[name]
    return _with_defaults(cls, EXTRA_KWARGS.get(name, {}))


def _with_defaults(cls: type, defaults: dict[str, Any]) -> type:
    """``cls`` with a constructor that also fills ``defaults`` when a call leaves them out.

    Some of PEFT's test bodies build the config themselves with LoRA's keyword arguments only
    (``config_cls(target_modules=...)``), never through the row kwargs; this gives them the same extra
    fields the parametrised rows get (the row's own values still win). The class itself is patched, inside
    the pytest process of this one pass only, so that identity, pickling and ``from_pretrained`` still see
    the real class.
    """
    if not defaults or getattr(cls.__init__, "_suite_defaults", None) == defaults:
        return cls
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for key, value in defaults.items():
            kwargs.setdefault(key, copy.deepcopy(value))
        original(self, *args, **kwargs)

    __init__._suite_defaults = defaults  # type: ignore[attr-defined]
    cls.__init__ = __init__
    return cls


def _rewrite_rows(argnames: list[str], rows: list[Any], target: type, extra: dict[str, Any]) -> list[Any] | None:
    """Keep the rows that use ``LoraConfig`` (exactly, not subclasses), with ``target`` substituted.

    Returns ``None`` when no row holds a config class (the parametrisation is left alone).
    """
    from _pytest.mark.structures import ParameterSet
    from peft import LoraConfig, PeftConfig

    def is_config_class(v: Any) -> bool:
        return isinstance(v, type) and issubclass(v, PeftConfig)

    out, saw_config = [], False
    for row in rows:
        ps = ParameterSet.extract_from(row, force_tuple=len(argnames) == 1)
        values = list(ps.values)
        if any(is_config_class(v) for v in values):
            saw_config = True
        if not any(v is LoraConfig for v in values):
            continue
        values = [target if v is LoraConfig else v for v in values]
        for i, argname in enumerate(argnames):
            if _is_kwargs_argname(argname) and isinstance(values[i], dict) and extra:
                values[i] = {**extra, **values[i]}
        if len(argnames) == 1:
            out.append(pytest.param(values[0], marks=ps.marks, id=ps.id))
        else:
            out.append(pytest.param(*values, marks=ps.marks, id=ps.id))
    return out if saw_config else None


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: Any) -> None:
    """Rewrite the function's ``parametrize`` marks before pytest's own hook applies them."""
    name = os.environ.get(ENV)
    if not name:
        return
    from _pytest.mark.structures import Mark

    target, extra = _target_class(name), EXTRA_KWARGS.get(name, {})
    markers = metafunc.definition.own_markers
    for i, mark in enumerate(markers):
        if mark.name != "parametrize" or len(mark.args) < 2:
            continue
        argnames = mark.args[0]
        argnames = [a.strip() for a in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
        rows = _rewrite_rows(argnames, list(mark.args[1]), target, extra)
        if rows is None:
            continue
        kwargs = {k: v for k, v in mark.kwargs.items() if k != "ids"}
        if isinstance(mark.kwargs.get("ids"), (list, tuple)):
            # explicit id lists no longer line up with the filtered rows; pytest's own ids are used instead
            pass
        elif "ids" in mark.kwargs:
            kwargs["ids"] = mark.kwargs["ids"]
        markers[i] = Mark("parametrize", (mark.args[0], rows, *mark.args[2:]), kwargs, _ispytest=True)


def _patch_helpers(target: type) -> None:
    """PEFT's ``set_init_weights_false`` picks the init kwarg by class identity (``config_cls in (LoraConfig,
    ...)``), so a LoRA subclass would get another tuner's ``init_weights``; give it LoRA's branch."""
    from peft import LoraConfig

    for mod_name, mod in list(sys.modules.items()):
        orig = getattr(mod, "set_init_weights_false", None)
        if not mod_name.startswith("tests.") or orig is None or getattr(orig, "_hf_trust_patched", False):
            continue

        def patched(config_cls, kwargs, _orig=orig):
            return _orig(LoraConfig if config_cls is target else config_cls, kwargs)

        patched._hf_trust_patched = True
        mod.set_init_weights_false = patched


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Deselect every test item that does not run the substituted config."""
    name = os.environ.get(ENV)
    if not name:
        return
    target = _target_class(name)
    if name != "lora":
        _patch_helpers(target)
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (keep if any(v is target for v in params.values()) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


# ---------------------------------------------------------------------------------------------- driver part
def download_peft_tests(dest: Path) -> Path:
    """``pip download`` the sdist of the installed PEFT version into ``dest``; return the extracted root."""
    import peft

    version = peft.__version__
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"peft=={version}", "-d"]
    subprocess.run([*cmd, str(dest)], check=True, stdout=subprocess.DEVNULL)
    archives = sorted(dest.glob(f"peft-{version}.tar.gz"))
    if not archives:
        raise HFTrustFileNotFoundError(f"pip download left no peft-{version}.tar.gz in {dest}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(dest, filter="data")
    return dest / f"peft-{version}"


def test_only_deps(dest: Path) -> str | None:
    """A ``--target`` folder with the packages PEFT's test helpers import but hf-trust does not need.

    ``tests/testing_common.py`` imports ``diffusers`` at module level (for its Stable Diffusion tests); it is
    installed without dependencies into a temporary folder that only the pytest subprocess sees, so the
    environment itself is not changed.  Returns ``None`` when everything is importable already.
    """
    import importlib.util

    missing = [m for m in ("diffusers",) if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    site = dest / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), *missing]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return str(site)


def prepare(root: Path) -> Path:
    """Make the sdist's ``tests`` folder importable as a package (its modules use relative imports,
    ``from .testing_common import ...``, but the sdist ships no ``__init__.py``)."""
    if not (root / "tests" / "test_custom_models.py").is_file():
        raise HFTrustFileNotFoundError(
            f"{root} is not an extracted PEFT source distribution (no tests/test_custom_models.py)"
        )
    init = root / "tests" / "__init__.py"
    if not init.exists():
        init.touch()
    return root


def run_pass(
    root: Path, name: str, files: list[str], extra_args: list[str], log_dir: Path, site: str | None = None
) -> Path:
    """One pytest pass over ``files`` for config ``name``; returns the JUnit XML path."""
    xml = log_dir / f"{name}.xml"
    paths = [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", ""), site or ""]
    env = {
        **os.environ,
        ENV: name,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "HF_HUB_OFFLINE": "1",  # rows that need a Hub model fail fast, for LoRA and ours alike
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *files,
        "-p",
        Path(__file__).stem,
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-q",
        "--no-header",
        "-rN",
        f"--junitxml={xml}",
        *extra_args,
    ]
    with open(log_dir / f"{name}.log", "w") as log:
        subprocess.run(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    return xml


def parse_junit(xml: Path, name: str) -> dict[str, str]:
    """Row id (config class name replaced by ``CONFIG``) → outcome (passed/failed/error/skipped)."""
    out: dict[str, str] = {}
    if not xml.exists():
        return out
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                break
        row = f"{case.get('classname')}::{case.get('name')}"
        out[row.replace(CLASS_NAMES[name], "CONFIG")] = outcome
    return out


def summarise(
    results: dict[str, dict[str, str]],
) -> tuple[dict[str, dict[str, int]], dict[str, list[str]], dict[str, dict[str, list[str]]]]:
    counts = {
        n: {k: sum(v == k for v in r.values()) for k in ("passed", "failed", "error", "skipped")}
        for n, r in results.items()
    }
    ref = results.get("lora", {})
    regressions = {
        n: sorted(row for row, v in r.items() if v in ("failed", "error") and ref.get(row) == "passed")
        for n, r in results.items()
        if n != "lora"
    }
    # PEFT's tests skip some checks for any class that is not exactly LoraConfig: not failures, but rows
    # that did not exercise the config; listed so that the pass count is not read as more than it is.
    skipped_only = {
        n: sorted(row for row, v in r.items() if v == "skipped" and ref.get(row) == "passed")
        for n, r in results.items()
        if n != "lora"
    }
    # The converse: PEFT skips a row for exactly LoraConfig (a LoRA limitation it knows, e.g. merging
    # grouped convolutions) but not for a subclass, which then runs into the same limitation.
    fails_lora_skipped = {
        n: sorted(row for row, v in r.items() if v in ("failed", "error") and ref.get(row) == "skipped")
        for n, r in results.items()
        if n != "lora"
    }
    return (
        counts,
        regressions,
        {"skipped where LoRA passes": skipped_only, "fails where LoRA is skipped": fails_lora_skipped},
    )


def write_report(
    path: Path,
    counts: dict[str, dict[str, int]],
    regressions: dict[str, list[str]],
    other: dict[str, dict[str, list[str]]],
    meta: dict[str, str],
) -> None:
    from hf_trust.atomic import atomic_write_text

    ours = {n: len(regressions.get(n, [])) for n in counts if n != "lora"}
    headline = f"PEFT {meta['peft']}'s own tests with our configs in place of LoraConfig: " + "; ".join(
        f"{CLASS_NAMES[n]} {k} rows fail where LoRA passes" for n, k in ours.items()
    )
    status = "zero regressions against stock LoRA" if not any(ours.values()) else "regressions against stock LoRA"
    lines = [
        "---",
        f"method: PEFT suite\nheadline: {json.dumps(headline)}\nstatus: {status}",
        "---",
        "# PEFT's own tuner tests with hf-trust's configs in place of `LoraConfig`",
        "",
        f"Run {meta['date']} on {meta['machine']}; PEFT {meta['peft']} (its sdist's tests), transformers "
        f"{meta['transformers']}, torch {meta['torch']}; files: {meta['files']}; wall time {meta['wall']}.",
        "Produced by `python benchmarks/peft_suite.py`. Each pass runs only the parametrised rows whose config "
        "class is exactly `LoraConfig`, with the config substituted (ThanoRA rows also get "
        "`task_names=['task_a', 'task_b']`, and test bodies that build the config themselves get the same field as a "
        "default; LoRASculpt rows use `LoRASculptConfig`'s own defaults, ρ = 0.1 included, so PEFT's smallest "
        "tensors, e.g. the 1×8 `lora_B` of a one-output layer, meet the keep-at-least-one-entry rule). "
        "PEFT's `set_init_weights_false` helper is given LoRA's branch for the substituted class. Rows that "
        "need a Hub download fail (offline) for every config. 'skipped where LoRA passes' counts rows that PEFT "
        "skips for any class other than exactly `LoraConfig` (e.g. mixed adapter batches): not failures, but "
        "not exercised either. 'fails where LoRA is skipped' counts rows that PEFT skips for exactly `LoraConfig` "
        "because LoRA does not support them (e.g. merging grouped convolutions); a subclass is not skipped and "
        "meets the same limitation.",
        "",
        "| config | rows | passed | failed | errors | skipped | fails where LoRA passes | " + " | ".join(other) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(other),
    ]
    for n, c in counts.items():
        reg = "–" if n == "lora" else str(len(regressions.get(n, [])))
        extra = " | ".join("–" if n == "lora" else str(len(cat.get(n, []))) for cat in other.values())
        lines.append(
            f"| {CLASS_NAMES[n]} | {sum(c.values())} | {c['passed']} | {c['failed']} | {c['error']} | "
            f"{c['skipped']} | {reg} | {extra} |"
        )
    for n, rows in regressions.items():
        lines += ["", f"## {CLASS_NAMES[n]}: rows that fail while LoRA passes ({len(rows)})", ""]
        if not rows:
            lines.append("None.")
        for row in rows[:200]:
            lines.append(f"- `{row}`")
        if len(rows) > 200:
            lines.append(f"- … and {len(rows) - 200} more")
        # group by test function so the causes are easy to see
        by_test: dict[str, int] = {}
        for row in rows:
            fn = re.sub(r"\[.*$", "", row.rsplit("::", 1)[-1])
            by_test[fn] = by_test.get(fn, 0) + 1
        if by_test:
            lines += ["", "By test: " + ", ".join(f"`{k}` ×{v}" for k, v in sorted(by_test.items()))]
    for title, cat in other.items():
        for n, rows in cat.items():
            by_test: dict[str, int] = {}
            for row in rows:
                # test function and the row's name (up to the model id) so that the cause is visible
                fn = row.rsplit("::", 1)[-1]
                key = re.sub(r"\[.*$", "", fn) + " / " + re.sub(r"^[^\[]*\[|-.*$", "", fn)
                by_test[key] = by_test.get(key, 0) + 1
            if by_test:
                lines += ["", f"{CLASS_NAMES[n]}, {title}, by test / row: "]
                lines += [f"- `{k}` ×{v}" for k, v in sorted(by_test.items())]
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--files", default=",".join(FILES), help="test files inside PEFT's sdist")
    parser.add_argument("--peft-src", default=None, help="an already extracted PEFT sdist (skips the download)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "peft_suite.md"))
    parser.add_argument("--keep", default=None, help="folder for logs and JUnit XML (default: a temp folder)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression (for a partial run)")
    parser.add_argument(
        "--reuse",
        default=None,
        help="folder of an earlier run's JUnit XML (its --keep): its rows are the starting point and the rows of "
        "this run (e.g. a -k subset after a fix) replace them; the report says so",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    if "lora" not in names:
        names.insert(0, "lora")  # the reference every comparison needs
    files = [f.strip() for f in args.files.split(",") if f.strip()]

    import peft
    import torch
    import transformers

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="peft-suite-") as tmp:
        root = prepare(Path(args.peft_src) if args.peft_src else download_peft_tests(Path(tmp)))
        log_dir = Path(args.keep) if args.keep else Path(tmp) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        site = test_only_deps(Path(tmp))
        extra = ["-k", args.keyword] if args.keyword else []
        results = {}
        for n in names:
            t = time.time()
            xml = run_pass(root, n, files, extra, log_dir, site)
            results[n] = parse_junit(xml, n)
            print(f"{n}: {len(results[n])} rows in {time.time() - t:.0f}s", flush=True)
            if args.reuse:
                earlier = parse_junit(Path(args.reuse) / f"{n}.xml", n)
                rerun = len(results[n])
                results[n] = {**earlier, **results[n]}
                print(f"{n}: {rerun} rows re-run over {len(earlier)} earlier rows", flush=True)
    counts, regressions, other = summarise(results)
    for n, c in counts.items():
        print(n, c, "" if n == "lora" else f"fails-where-LoRA-passes={len(regressions[n])}")
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared), {platform.python_version()}",
        "peft": peft.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "files": ", ".join(f"`{f}`" for f in files)
        + (
            f" (rows matching -k {args.keyword!r} re-run on top of the earlier full run)"
            if args.reuse and args.keyword
            else (f" (-k {args.keyword!r})" if args.keyword else "")
        ),
        "wall": f"{(time.time() - t0) / 60:.1f} min",
    }
    write_report(Path(args.out), counts, regressions, other, meta)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
