"""``benchmarks/assemble_results.py``: the summary table of RESULTS.md is derived from the per-method files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("assemble_results", ROOT / "benchmarks" / "assemble_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ar = _module()

OLD = """# Measured results

Intro paragraph that stays.

| method | headline as measured | status |
|---|---|---|
| GGEUR | an old headline nobody updated | stale |

## GGEUR

old body
"""


def _write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.md").write_text(text)


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    _write(
        folder,
        "ggeur",
        "---\nmethod: GGEUR\nheadline: 'best mean at every α: +0.6 | +1.2 points'\nstatus: direction reproduced\n---\n"
        "## GGEUR (`bench`)\n\nnew body 0.675\n",
    )
    _write(
        folder,
        "federated",
        "---\nmethod: Federated core\nheadline: >-\n  round overhead 1.12×\n  (goal ≤ 1.15×)\nstatus: goal met\n---\n"
        "# Federated core\n\n## Overhead\n\nratio 1.12\n",
    )
    _write(folder, "bye", "## BYE\n\nno front matter yet\n")
    _write(folder, "zz_new", "---\nmethod: New\nheadline: h\nstatus: s\n---\n## New\n")
    return folder


def test_summary_rows_come_from_the_files_in_order(results_dir):
    text, warnings = ar.assemble(OLD, results_dir)
    lines = text.splitlines()
    start = lines.index("| method | headline as measured | status |")
    assert lines[start : start + 6] == [
        "| method | headline as measured | status |",
        "|---|---|---|",
        "| Federated core | round overhead 1.12× (goal ≤ 1.15×) | goal met |",
        "| GGEUR | best mean at every α: +0.6 \\| +1.2 points | direction reproduced |",
        "| bye | (no headline: add front matter to benchmarks/results/bye.md) | – |",
        "| New | h | s |",
    ]
    assert "an old headline nobody updated" not in text and "old body" not in text
    assert text.startswith("# Measured results\n\nIntro paragraph that stays.\n\n| method |")
    # Bodies follow in the same order, without their front matter, level-1 files demoted.
    assert text.index("## Federated core") < text.index("### Overhead") < text.index("## GGEUR (`bench`)")
    assert text.index("## GGEUR (`bench`)") < text.index("## BYE") < text.index("## New")
    assert "method: GGEUR" not in text and "new body 0.675" in text
    assert any("bye.md has no front matter" in w for w in warnings)
    assert any("zz_new.md is not in ORDER" in w for w in warnings)
    # Assembling the result again changes nothing.
    assert ar.assemble(text, results_dir)[0] == text


def test_optional_method_files_are_placed_by_order(results_dir):
    _write(results_dir, "flower", "---\nmethod: Flower\nheadline: f\nstatus: ok\n---\n## Flower\n")
    _write(results_dir, "peft_suite", "---\nmethod: PEFT suite\nheadline: p\nstatus: ok\n---\n## PEFT suite\n")
    text, _ = ar.assemble(OLD, results_dir)
    rows = [line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["Federated core", "GGEUR", "Flower", "PEFT suite", "bye", "New"]


@pytest.mark.parametrize(
    "front, message",
    [
        ("---\nmethod: X\nheadline: h\n---\n", "lacks status"),
        ("---\nmethod: X\nheadline: h\nstatus: s\n", "never closed"),
        ("---\n- a list\n---\n", "key: value"),
    ],
)
def test_bad_front_matter_names_the_file_and_fix(results_dir, front, message):
    _write(results_dir, "thanora", front + "## ThanoRA\n")
    with pytest.raises(ValueError, match=rf"results/thanora\.md: .*{message}"):
        ar.assemble(OLD, results_dir)


def test_cli_writes_checks_and_is_strict(results_dir, tmp_path, capsys):
    target = tmp_path / "RESULTS.md"
    target.write_text(OLD)
    assert ar.main(["--results-dir", str(results_dir), "--target", str(target), "--check"]) == 1
    assert target.read_text() == OLD  # --check never writes
    assert ar.main(["--results-dir", str(results_dir), "--target", str(target)]) == 0
    assert target.read_text() == ar.assemble(OLD, results_dir)[0]
    assert ar.main(["--results-dir", str(results_dir), "--target", str(target), "--check"]) == 0
    assert ar.main(["--results-dir", str(results_dir), "--target", str(target), "--strict", "--check"]) == 1


def test_the_repository_results_assemble():
    # Every per-method file of the repository parses and lands in RESULTS.md (no write here).
    text, _ = ar.assemble((ROOT / "benchmarks" / "RESULTS.md").read_text(), ROOT / "benchmarks" / "results")
    files, _ = ar.load_files(ROOT / "benchmarks" / "results")
    assert len(files) >= 9
    for f in files:
        assert ar.demote(f.body).strip().splitlines()[0] in text


def test_every_picture_in_results_md_resolves():
    # Per-method files link pictures next to themselves; RESULTS.md sits one folder up, so links are rewritten.
    import re

    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links
    missing = [link for link in links if not (ROOT / "benchmarks" / link).is_file()]
    assert not missing, f"RESULTS.md links pictures that do not exist: {missing}"
    assert ar.relink_images("![a](x.png) ![b](results/y.png) ![c](https://h/z.png)", "results") == (
        "![a](results/x.png) ![b](results/y.png) ![c](https://h/z.png)"
    )


def test_adopting_the_hand_written_summary_round_trips(tmp_path):
    # A copy of the repository's results: moving each summary row into its file's front matter and
    # assembling again gives back the same summary rows, now derived from the files.
    import shutil

    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    for path in results.glob("*.md"):  # start from files without front matter
        f = ar.parse_result_file(path.stem, path.read_text())
        path.write_text(f.body)
    old = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    table = ar.introduction_table(old)
    done = ar.adopt_summary(old, results)
    assert sorted(done) == sorted(p.stem for p in results.glob("*.md"))
    assert ar.adopt_summary(old, results) == []  # files that have front matter are left alone
    text, warnings = ar.assemble(old, results)
    assert not any("no front matter" in w for w in warnings)
    new_rows = ar.introduction_table(text)[2:]
    by_method = {ar.summary_rows(old)[name]["method"]: name for name in done}
    assert sorted(new_rows) == sorted(table[2:])
    # ... and in ORDER, not in the hand-written order.
    assert [by_method[r.split(" | ")[0][2:]] for r in new_rows] == [n for n in ar.ORDER if n in done]
