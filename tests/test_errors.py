"""One exception family: every error the package raises on purpose is an ``HFTrustError`` subclass.

The check parses every module of the package (not a text grep, so a ``raise`` split over lines or written
inside a string cannot fool it) and lists each ``raise <builtin error>(...)`` it finds.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from hf_trust import errors
from tests.layering import NAMESPACE_ROOTS

ROOT = Path(__file__).resolve().parents[1]

#: Builtin errors the package must not raise bare: each has an hf-trust subclass that also derives from it,
#: so ``except ValueError`` in user code keeps working. ``AttributeError`` (the ``__getattr__`` protocol) and
#: ``NotImplementedError`` (abstract methods) are protocol, not errors about the user's input.
BARE = {
    "Exception",
    "ValueError",
    "TypeError",
    "RuntimeError",
    "KeyError",
    "IndexError",
    "FileNotFoundError",
    "OSError",
    "TimeoutError",
    "ImportError",
}


def bare_raises(source: str, path: str) -> list[str]:
    """``path:line: raise Name`` for each raise of a name in :data:`BARE` (called or not) in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id in BARE:
            found.append(f"{path}:{node.lineno}: raise {exc.id}")
    return found


def test_the_package_raises_no_bare_builtin_errors():
    found = []
    for folder in NAMESPACE_ROOTS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            found += bare_raises(path.read_text(encoding="utf-8"), rel)
    assert not found, (
        "raise an hf_trust.errors subclass (HFTrustConfigError, HFTrustTypeError, HFTrustStateError, "
        "HFTrustKeyError, HFTrustFileNotFoundError, FederationError, ...) instead of:\n" + "\n".join(found)
    )


def test_the_checker_finds_each_form_of_bare_raise():
    source = (
        "def f(x):\n"
        "    if x == 1:\n"
        "        raise ValueError('bad')\n"
        "    if x == 2:\n"
        "        raise TypeError(\n            'split over lines'\n        )\n"
        "    if x == 3:\n"
        "        raise KeyError\n"
        "    if x == 4:\n"
        "        raise HFTrustConfigError('fine')\n"
        "    if x == 5:\n"
        "        raise AttributeError('protocol')\n"
        "    s = 'raise RuntimeError(\"in a string\")'\n"
        "    try:\n"
        "        pass\n"
        "    except OSError:\n"
        "        raise\n"
    )
    assert bare_raises(source, "m.py") == [
        "m.py:3: raise ValueError",
        "m.py:5: raise TypeError",
        "m.py:9: raise KeyError",
    ]


def _family() -> list[type]:
    return [obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, BaseException)]


def test_every_error_class_is_in_the_family_and_keeps_its_builtin_base():
    classes = _family()
    assert classes and all(issubclass(c, errors.HFTrustError) for c in classes)
    # the subclasses that stand in for a builtin still derive from it (existing except clauses keep working)
    for name, builtin in [
        ("HFTrustConfigError", ValueError),
        ("HFTrustDataError", ValueError),
        ("HFTrustTypeError", TypeError),
        ("HFTrustStateError", RuntimeError),
        ("HFTrustKeyError", KeyError),
        ("HFTrustFileNotFoundError", FileNotFoundError),
        ("FederationError", RuntimeError),
        ("FederationTimeout", TimeoutError),
        ("MissingExtraError", ImportError),
    ]:
        assert issubclass(getattr(errors, name), builtin), name


def test_a_key_error_reads_as_written():
    with pytest.raises(KeyError) as info:
        raise errors.HFTrustKeyError("no recipe 'x'; known: a, b")
    assert str(info.value) == "no recipe 'x'; known: a, b"
