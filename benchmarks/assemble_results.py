"""Rebuild ``benchmarks/RESULTS.md`` from its hand-written introduction and the per-method files in
``benchmarks/results/``, so that a figure is edited in one place only.

Each per-method file starts with a short YAML front matter that the summary table at the top of
RESULTS.md is built from (the front matter itself is not copied into RESULTS.md)::

    ---
    method: GGEUR
    headline: best mean at every α, +0.6–1.2 points over equal-count controls (≈ 1 std)
    status: direction reproduced, small margin
    ---
    ## GGEUR (`hf-trust demo --methods ggeur --full`)
    ...

Usage::

    python benchmarks/assemble_results.py            # rewrite RESULTS.md
    python benchmarks/assemble_results.py --check    # exit 1 if RESULTS.md is not what the files give
    python benchmarks/assemble_results.py --strict   # exit 1 if a file lacks its front matter
    python benchmarks/assemble_results.py --adopt-summary [NAME ...]
        # one-off: move each row of RESULTS.md's current (hand-written) summary table into the front
        # matter of its method's file, for files that have none yet; then run without options
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from hf_trust.atomic import atomic_write_text
from hf_trust.errors import HFTrustDataError

#: Order of the sections; files listed here but absent are skipped, files not listed come last.
ORDER = (
    "federated",
    "ggeur",
    "fpl",
    "flower",
    "lorasculpt",
    "cot_kinetics",
    "thanora",
    "peft_suite",
    "bye",
    "acgkd",
    "epeagent",
    "import_time",
)
HERE = Path(__file__).resolve().parent
SUMMARY_KEYS = ("method", "headline", "status")
TABLE_HEADER = ("| method | headline as measured | status |", "|---|---|---|")


@dataclass
class ResultFile:
    """One per-method file: its summary fields (``None`` without front matter) and its markdown body."""

    name: str
    summary: Optional[dict[str, str]]
    body: str


def parse_result_file(name: str, text: str) -> ResultFile:
    """Split the YAML front matter (``---`` ... ``---``) from the body and check its three fields."""
    if not text.startswith("---\n"):
        return ResultFile(name, None, text)
    end = text.find("\n---\n", 4)
    if end < 0:
        raise HFTrustDataError(f"results/{name}.md: front matter opened with '---' is never closed; add a '---' line")
    try:
        meta = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as exc:
        raise HFTrustDataError(f"results/{name}.md: front matter is not valid YAML ({exc})") from None
    if not isinstance(meta, dict):
        raise HFTrustDataError(f"results/{name}.md: front matter must be 'key: value' lines")
    missing = [k for k in SUMMARY_KEYS if not str(meta.get(k) or "").strip()]
    if missing:
        raise HFTrustDataError(
            f"results/{name}.md: front matter lacks {', '.join(missing)}; it needs method, headline and status"
        )
    summary = {k: " ".join(str(meta[k]).split()) for k in SUMMARY_KEYS}
    return ResultFile(name, summary, text[end + len("\n---\n") :].lstrip("\n"))


def demote(text: str) -> str:
    """Files that start at level 1 are pushed one heading level down to sit under the summary."""
    if not text.startswith("# "):
        return text
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines()) + "\n"


_IMAGE_LINK = re.compile(r"(!\[[^\]]*\]\()([^)/:]+\))")


def relink_images(text: str, folder: str) -> str:
    """Image links of a per-method file are relative to its folder; RESULTS.md sits one level up."""
    return _IMAGE_LINK.sub(lambda m: f"{m.group(1)}{folder}/{m.group(2)}", text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def summary_table(files: Sequence[ResultFile]) -> str:
    """The summary table, one row per file, in the files' order."""
    lines = list(TABLE_HEADER)
    for f in files:
        if f.summary is None:
            lines.append(f"| {f.name} | (no headline: add front matter to benchmarks/results/{f.name}.md) | – |")
        else:
            lines.append(f"| {' | '.join(_cell(f.summary[k]) for k in SUMMARY_KEYS)} |")
    return "\n".join(lines) + "\n"


def introduction(results_md: str) -> str:
    """The hand-written text above the first section, without the (generated) summary table."""
    head = results_md.split("\n## ", 1)[0] if not results_md.startswith("## ") else ""
    lines = [line for line in head.splitlines() if not line.lstrip().startswith("|")]
    return "\n".join(lines).rstrip() + "\n"


#: Row labels of the hand-written summary table that do not simply name their file (``--adopt-summary``).
ROW_LABELS = {
    "federated core": "federated",
    "federated prompt learning": "fpl",
    "cot-kinetics (reconstructed)": "cot_kinetics",
    "peft suite": "peft_suite",
    "start-up (import time)": "import_time",
}


def summary_rows(results_md: str) -> dict[str, dict[str, str]]:
    """The rows of the summary table in RESULTS.md, keyed by the per-method file they belong to."""
    rows: dict[str, dict[str, str]] = {}
    lines = introduction_table(results_md)
    for line in lines[2:]:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) != 3:
            raise HFTrustDataError(f"summary row {line!r} does not have three cells (method, headline, status)")
        label = cells[0]
        rows[ROW_LABELS.get(label.lower(), re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_"))] = dict(
            zip(SUMMARY_KEYS, cells)
        )
    return rows


def introduction_table(results_md: str) -> list[str]:
    """The table lines (``| ... |``) above the first section of RESULTS.md."""
    head = results_md.split("\n## ", 1)[0] if not results_md.startswith("## ") else ""
    return [line for line in head.splitlines() if line.lstrip().startswith("|")]


def front_matter(summary: dict[str, str]) -> str:
    """The YAML front matter block for one per-method file."""
    return "---\n" + yaml.safe_dump(summary, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def adopt_summary(results_md: str, results_dir: Path, only: Sequence[str] = ()) -> list[str]:
    """Write each summary row of RESULTS.md into its file's front matter (files without one); return their names."""
    rows = summary_rows(results_md)
    done = []
    for name, summary in rows.items():
        path = results_dir / f"{name}.md"
        if (only and name not in only) or not path.is_file():
            continue
        text = path.read_text()
        if parse_result_file(name, text).summary is None:
            atomic_write_text(path, front_matter(summary) + text)
            done.append(name)
    return done


def load_files(results_dir: Path) -> tuple[list[ResultFile], list[str]]:
    """The per-method files in :data:`ORDER` (then any others, sorted), and warnings about them."""
    present = {p.stem: p for p in sorted(results_dir.glob("*.md"))}
    names = [n for n in ORDER if n in present] + sorted(n for n in present if n not in ORDER)
    warnings = [f"results/{n}.md is not in ORDER; appended at the end" for n in present if n not in ORDER]
    files = [parse_result_file(n, present[n].read_text()) for n in names]
    warnings += [f"results/{f.name}.md has no front matter (method/headline/status)" for f in files if not f.summary]
    return files, warnings


def assemble(results_md: str, results_dir: Path) -> tuple[str, list[str]]:
    """The new RESULTS.md text from the current one's introduction and the per-method files."""
    files, warnings = load_files(results_dir)
    parts = [introduction(results_md), summary_table(files)]
    parts += [relink_images(demote(f.body), results_dir.name).strip() + "\n" for f in files]
    return "\n".join(parts), warnings


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if RESULTS.md is out of date")
    p.add_argument("--strict", action="store_true", help="exit 1 if a per-method file lacks its front matter")
    p.add_argument(
        "--adopt-summary",
        nargs="*",
        metavar="NAME",
        help="one-off: copy the current summary rows into the front matter of files that lack it (all or NAMEs)",
    )
    p.add_argument("--results-dir", type=Path, default=HERE / "results")
    p.add_argument("--target", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args(argv)
    if args.adopt_summary is not None:
        try:
            done = adopt_summary(args.target.read_text(), args.results_dir, args.adopt_summary)
        except ValueError as exc:
            print(f"assemble_results: error: {exc}", file=sys.stderr)
            return 2
        print(f"front matter added to: {', '.join(done) or 'none (every file has one)'}")
        return 0
    try:
        text, warnings = assemble(args.target.read_text(), args.results_dir)
    except ValueError as exc:
        print(f"assemble_results: error: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"assemble_results: warning: {warning}", file=sys.stderr)
    if args.strict and any("no front matter" in w for w in warnings):
        return 1
    if args.check:
        if text != args.target.read_text():
            print(f"{args.target} is out of date; run python benchmarks/assemble_results.py", file=sys.stderr)
            return 1
        return 0
    atomic_write_text(args.target, text)
    print(f"wrote {args.target} from {text.count(chr(10) + '## ')} sections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
