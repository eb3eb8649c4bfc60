"""Run the selected recipes, print the results table and write the report folder.

The report is assembled in a temporary folder next to the target and moved into place at the end,
so an interrupted or failed run never leaves a half-written ``demo_report/``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from ..errors import DemoError, HFTrustError
from .registry import Recipe, RecipeContext, RecipeResult, available_recipes


def _select(methods: Optional[Sequence[str]]) -> list[Recipe]:
    recipes = available_recipes()
    if not recipes:
        raise DemoError("no demo recipes are installed")
    if not methods:
        return list(recipes.values())
    unknown = [m for m in methods if m not in recipes]
    if unknown:
        raise DemoError(f"unknown method(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(recipes)}")
    return [recipes[m] for m in dict.fromkeys(methods)]


def _check_writable(out_dir: Path) -> Path:
    parent = out_dir.resolve().parent
    if out_dir.exists() and not out_dir.is_dir():
        raise DemoError(f"report path {out_dir} exists and is not a folder; pass another --out")
    if not parent.is_dir():
        raise DemoError(f"folder {parent} does not exist; create it or pass another --out")
    return parent


def format_table(results: dict[str, RecipeResult]) -> str:
    """A plain-text table of every row, aligned, as printed at the end of the demo."""
    header = ("method", "setting", "metric", "value", "n")
    lines = [header]
    for name, result in results.items():
        for row in result.rows:
            lines.append((name, row.setting, row.metric, row.formatted_value(), "" if row.n is None else str(row.n)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _markdown(
    results: dict[str, RecipeResult], recipes: dict[str, Recipe], failures: dict[str, str], meta: dict
) -> str:
    md = ["# hf-trust demo report", ""]
    md.append(
        f"Mode: {'full' if meta['full'] else 'default'}; device: {meta['device']}; total time {meta['seconds']:.0f} s."
    )
    md.append("")
    for name, result in results.items():
        md += [
            f"## {name}: {recipes[name].title}",
            "",
            "| setting | metric | value | n | note |",
            "|---|---|---|---|---|",
        ]
        for row in result.rows:
            md.append(f"| {row.setting} | {row.metric} | {row.formatted_value()} | {row.n or ''} | {row.note} |")
        md.append("")
        for note in result.notes:
            md.append(f"- {note}")
        for plot in result.plots:
            md.append(f"![{plot.name}]({name}/{plot.name})")
        md.append(f"\nTime: {meta['times'][name]:.0f} s\n")
    for name, err in failures.items():
        md += [f"## {name}: FAILED", "", "```", err.strip(), "```", ""]
    return "\n".join(md)


def run_demo(
    methods: Optional[Sequence[str]] = None,
    full: bool = False,
    out_dir: str | Path = "demo_report",
    seeds: Optional[Sequence[int]] = None,
) -> dict[str, RecipeResult]:
    """Run the recipes and write ``out_dir/README.md``, ``results.json`` and each recipe's plots.

    Returns the results of the recipes that succeeded.  A recipe that raises is reported as failed
    (its traceback goes into the report) and the others still run; the CLI exits non-zero then.
    """
    import torch

    out_dir = Path(out_dir)
    selected = _select(methods)
    parent = _check_writable(out_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:  # a real write probe: os.access says yes to root even on read-only file systems
        staging = Path(tempfile.mkdtemp(prefix=".demo_report.", dir=parent))
    except OSError as exc:
        raise DemoError(f"cannot write the report into {parent} ({exc.strerror}); pass a writable --out") from None
    results: dict[str, RecipeResult] = {}
    failures: dict[str, str] = {}
    times: dict[str, float] = {}
    start = time.time()
    try:
        bar = tqdm(selected, desc="hf-trust demo", position=0)
        for recipe in bar:
            bar.set_postfix_str(recipe.name)
            rdir = staging / recipe.name
            rdir.mkdir()
            run_seeds = list(seeds) if seeds else list(recipe.full_seeds if full else recipe.quick_seeds)
            ctx = RecipeContext(out_dir=rdir, full=full, seeds=run_seeds, device=device)
            t0 = time.time()
            try:
                result = recipe.run(ctx)
                if not isinstance(result, RecipeResult):
                    raise TypeError(f"recipe {recipe.name!r} returned {type(result).__name__}, not RecipeResult")
                results[recipe.name] = result
            except KeyboardInterrupt:
                raise
            except HFTrustError as exc:  # missing asset, unwritable cache: one clear line, no traceback
                failures[recipe.name] = f"{type(exc).__name__}: {exc}"
                tqdm.write(f"[{recipe.name}] FAILED: {failures[recipe.name]}")
            except Exception:  # one recipe's failure is reported, the rest still run
                failures[recipe.name] = traceback.format_exc()
                tqdm.write(f"[{recipe.name}] FAILED: {failures[recipe.name].strip().splitlines()[-1]}")
            times[recipe.name] = time.time() - t0
        meta = {"full": full, "device": device, "seconds": time.time() - start, "times": times}
        recipes = {r.name: r for r in selected}
        (staging / "README.md").write_text(_markdown(results, recipes, failures, meta))
        payload = {
            "meta": meta,
            "results": {
                n: {
                    "rows": [r.__dict__ for r in res.rows],
                    "notes": res.notes,
                    "plots": [str(p.name) for p in res.plots],
                }
                for n, res in results.items()
            },
            "failures": failures,
        }
        (staging / "results.json").write_text(json.dumps(payload, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print()
    print(format_table(results) if any(r.rows for r in results.values()) else "(no results)")
    print(f"\nReport written to {out_dir}/README.md")
    if failures:
        raise DemoError(f"recipe(s) failed: {', '.join(failures)} (details in {out_dir}/README.md)")
    return results
