"""The import rules of hf-trust, checked by parsing every module (an import-linter written for this tree).

Layers, top to bottom (imports only point down):

* harness: ``hf_trust/demo`` (recipes, studies), ``hf_trust/cli.py``, ``hf_trust/assets`` (offline loaders),
  benchmarks, examples;
* library: ``peft_tuners``, ``trainers``, ``metrics``, ``hub_cards``, ``hf_trust/filters``, ``hf_trust/agents``
  (installed as ``hf_trust.peft_tuners`` etc.);
* base: ``hf_trust/errors.py``, ``hf_trust/atomic.py`` and ``hf_trust/fingerprint.py``, which import nothing from
  the package above the base.

Rules: a library module imports only library modules, the base and third-party packages — never the
harness, never the ``hf_trust`` front door itself (importing it runs registration and the lazy front
door). Nothing imports the pre-namespace top-level names (``trainers``, ``metrics``, ...). Examples and
benchmarks never import ``tests``; examples never import ``hf_trust.demo``; benchmarks may use the
experiment drivers in ``hf_trust.demo.studies`` and nothing else of the demo.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

#: repository folder -> installed package name
NAMESPACE_ROOTS = {
    "hf_trust": "hf_trust",
    "peft_tuners": "hf_trust.peft_tuners",
    "trainers": "hf_trust.trainers",
    "metrics": "hf_trust.metrics",
    "hub_cards": "hf_trust.hub_cards",
}
LIBRARY = (
    "hf_trust.peft_tuners",
    "hf_trust.trainers",
    "hf_trust.metrics",
    "hf_trust.hub_cards",
    "hf_trust.filters",
    "hf_trust.agents",
)
BASE = ("hf_trust.errors", "hf_trust.atomic", "hf_trust.fingerprint")
HARNESS = ("hf_trust.demo", "hf_trust.cli", "hf_trust.__main__", "hf_trust.assets", "hf_trust.flower_run")
OLD_TOP_LEVEL = ("peft_tuners", "trainers", "metrics", "hub_cards")
REPO_ONLY = ("tests", "benchmarks", "examples")


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.target} ({self.rule})"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_name(root: Path, path: Path) -> str | None:
    """Installed dotted name of a file under one of the namespace roots, else ``None``."""
    rel = path.relative_to(root)
    top = rel.parts[0]
    if top not in NAMESPACE_ROOTS:
        return None
    parts = [NAMESPACE_ROOTS[top], *rel.parts[1:]]
    parts[-1] = parts[-1][: -len(".py")]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _known_modules(root: Path) -> set[str]:
    names = set()
    for top in NAMESPACE_ROOTS:
        for path in (root / top).rglob("*.py"):
            name = module_name(root, path)
            if name:
                names.add(name)
    return names


def imported_modules(tree: ast.AST, this: str | None, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """Every module an AST imports (at any depth, lazy imports included), resolved to a dotted name.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module of this tree, else ``pkg``.
    """
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if this is None:
                    continue
                base = this.split(".") if is_package else this.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                pkg = ".".join(base + ([node.module] if node.module else []))
            else:
                pkg = node.module or ""
            for alias in node.names:
                candidate = f"{pkg}.{alias.name}"
                out.append((node.lineno, candidate if candidate in known else pkg))
    return out


def _broken_rule(rel: str, this: str | None, target: str) -> str | None:
    """The rule that importing ``target`` from file ``rel`` (module ``this``) breaks, if any."""
    if _within(target, OLD_TOP_LEVEL):
        return "pre-namespace top-level import; use hf_trust." + target
    if this is not None and _within(this, BASE) and _within(target, ("hf_trust",)) and not _within(target, BASE):
        return "base modules import nothing from hf_trust above the base"
    if this is not None and _within(this, LIBRARY):
        if _within(target, ("hf_trust",)) and not _within(target, LIBRARY + BASE):
            return "library code imports only the library and the base (not the harness or the front door)"
        if _within(target, REPO_ONLY):
            return "library code never imports tests, benchmarks or examples"
    if rel.startswith("examples/") and _within(target, ("tests", "hf_trust.demo")):
        return "examples use the public API only"
    if rel.startswith("benchmarks/") and (
        _within(target, ("tests",))
        or (_within(target, ("hf_trust.demo",)) and not _within(target, ("hf_trust.demo.studies",)))
    ):
        return "benchmarks use the public API (and hf_trust.demo.studies drivers) only"
    return None


def check_tree(root: Path) -> list[Violation]:
    """All violations of the rules above in the repository at ``root``."""
    root = Path(root)
    known = _known_modules(root)
    violations: list[Violation] = []
    files = [p for top in (*NAMESPACE_ROOTS, *REPO_ONLY) if (root / top).is_dir() for p in (root / top).rglob("*.py")]
    for path in sorted(files):
        if any(part in {".venv", "__pycache__"} for part in path.parts):
            continue
        rel = path.relative_to(root).as_posix()
        this = module_name(root, path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        for line, target in imported_modules(tree, this, path.name == "__init__.py", known):
            rule = _broken_rule(rel, this, target)
            if rule:
                violations.append(Violation(rel, line, target, rule))
    return sorted(set(violations), key=lambda v: (v.path, v.line, v.target))
