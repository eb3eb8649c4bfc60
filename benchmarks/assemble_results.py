"""Rebuild ``benchmarks/RESULTS.md`` from its hand-written header (title + summary table) and the
per-method files in ``benchmarks/results/``, so a figure is edited in one place only.

    python benchmarks/assemble_results.py
"""

from __future__ import annotations

from pathlib import Path

ORDER = ("federated", "ggeur", "fpl", "lorasculpt", "cot_kinetics", "thanora", "bye", "acgkd", "epeagent")
HERE = Path(__file__).resolve().parent


def demote(text: str) -> str:
    """Files that start at level 1 are pushed one heading level down to sit under the summary."""
    if not text.startswith("# "):
        return text
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines()) + "\n"


def main() -> None:
    target = HERE / "RESULTS.md"
    lines = target.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("## "))
    parts = ["".join(lines[:first]).rstrip() + "\n"]
    for name in ORDER:
        parts.append(demote((HERE / "results" / f"{name}.md").read_text()).strip() + "\n")
    target.write_text("\n".join(parts))
    print(f"wrote {target} from {len(ORDER)} result files")


if __name__ == "__main__":
    main()
