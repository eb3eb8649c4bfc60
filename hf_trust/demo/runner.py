"""Run the selected recipes, print the results table and write the report folder.

The report is assembled in a staging folder next to the target and renamed into place at the end
(:func:`hf_trust.atomic.atomic_directory`), so an interrupted or failed run never leaves a
half-written report and never loses the previous one. Every report carries a marker file
(:data:`REPORT_MARKER`) that lists the report's own files with their sha256. ``--out`` may only
replace a new or empty folder, or a report whose contents are exactly what that list says: a file
or folder the report did not write, or a report file edited since, stops the run before anything
is computed (a :class:`DemoError` naming it), so a user's own files are never deleted.

Refusing, rather than replacing only the report's own files, keeps the swap a single rename of a
folder that holds nothing but the report: keeping a user's notes would mean copying them into the
new report, i.e. the demo touching files it does not own.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from ..atomic import atomic_directory, atomic_write_json, atomic_write_text
from ..errors import DemoError, HFTrustConfigError, HFTrustError, HFTrustTypeError
from ..fingerprint import file_sha256
from .registry import MIN_SEEDS, Recipe, RecipeContext, RecipeResult, available_recipes

#: Written into every report folder with the list of the report's files; ``--out`` replaces a non-empty
#: folder only when it holds this file and nothing but the files it lists, unchanged.
REPORT_MARKER = ".hf-trust-report"

#: Version of the marker's content; format 2 added the file list (``files``: path -> sha256, ``dirs``).
MARKER_FORMAT = 2

#: File suffixes embedded as pictures in the report (anything else is linked).
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")


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


def is_report_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``hf-trust demo`` (it holds :data:`REPORT_MARKER`)."""
    return (Path(path) / REPORT_MARKER).is_file()


def check_report_target(out_dir: str | Path) -> Path:
    """Refuse any ``--out`` whose replacement could destroy a user's files; return the parent folder.

    Allowed: a path that does not exist yet, an empty folder, or a previous hf-trust report that
    holds nothing but the files its :data:`REPORT_MARKER` lists, unedited. Refused with a
    :class:`DemoError` naming the fix: a file, a symbolic link, the working directory or one of its
    parents, any other non-empty folder, and a report holding a file or folder it did not write or
    a report file edited since (the first one is named, see :func:`foreign_entry`).
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        # Replacing a link would rename the link, not the folder it points to; ask for the real path.
        raise DemoError(f"report path {out_dir} is a symbolic link; pass the folder it points to, or a new --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise DemoError(f"report path {out_dir} exists and is not a folder; pass another --out")
    resolved = out_dir.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise DemoError(
            f"--out {out_dir} is the working directory or contains it, which the report would replace; "
            "pass a new folder such as --out demo_report"
        )
    parent = resolved.parent
    if not parent.is_dir():
        raise DemoError(f"folder {parent} does not exist; create it or pass another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not is_report_folder(out_dir):
            raise DemoError(
                f"--out {out_dir} already holds files and is not an hf-trust report (no {REPORT_MARKER} file); "
                "pass a new or empty folder so nothing of yours is replaced"
            )
        problem = foreign_entry(out_dir)
        if problem is not None:
            raise DemoError(
                f"--out {out_dir} is an earlier hf-trust report, but {problem}, and replacing the report would "
                "delete it; move what you want to keep out of the folder (or delete the folder yourself), "
                "or pass a new --out"
            )
    return parent


def report_manifest(folder: str | Path) -> dict[str, Any]:
    """The report's own contents, for its marker: ``{"files": {path: sha256}, "dirs": [path, ...]}``.

    Paths are POSIX paths relative to ``folder``; the marker itself is not listed. Symbolic links are
    listed as files holding their target's text, so a link swapped for another one is noticed.
    """
    folder = Path(folder)
    files: dict[str, str] = {}
    dirs: list[str] = []
    for root, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        base = Path(root)
        for d in dirnames:
            path = base / d
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():  # os.walk does not descend into it: record the link, not what it points to
                files[rel] = "link:" + os.readlink(path)
            else:
                dirs.append(rel)
        for f in sorted(filenames):
            path = base / f
            rel = path.relative_to(folder).as_posix()
            if rel == REPORT_MARKER:
                continue
            files[rel] = "link:" + os.readlink(path) if path.is_symlink() else file_sha256(path)
    return {"files": files, "dirs": dirs}


def foreign_entry(folder: str | Path) -> Optional[str]:
    """``None`` when ``folder`` holds exactly what its marker lists, unedited; else the first problem, in words.

    A file or folder the marker does not list, a listed file whose sha256 differs, a listed folder
    that is now a file (or the reverse), and a marker without a file list (written by an earlier
    version, so its files cannot be told from the user's) are problems. A listed file the user
    deleted is not: nothing of theirs would be lost.
    """
    folder = Path(folder)
    info = _marker(folder)
    if info is None:
        return f"its {REPORT_MARKER} file is unreadable"
    listed_files, listed_dirs = info.get("files"), info.get("dirs")
    if not isinstance(listed_files, dict) or not isinstance(listed_dirs, list):
        return (
            f"its {REPORT_MARKER} file does not list the report's files (written by an earlier hf-trust), so "
            "files of yours in it cannot be told from the report's"
        )
    now = report_manifest(folder)
    listed_dir_set = set(listed_dirs)
    # Sorted so the message names the same (shallowest-first within a folder) entry on every run.
    for rel in sorted(set(now["dirs"]) | set(now["files"])):
        if rel in now["dirs"]:
            if rel not in listed_dir_set:
                return f"the folder {rel}/ in it was not written by the demo"
        elif rel not in listed_files:
            return f"the file {rel} in it was not written by the demo"
        elif listed_files[rel] != now["files"][rel]:
            return f"the report file {rel} in it was edited after the demo wrote it"
    return None


def _marker(folder: Path) -> Optional[dict]:
    """The marker of a report folder, or ``None`` when there is none or it is unreadable."""
    try:
        data = json.loads((folder / REPORT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == "hf-trust demo" else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown owner: assume it is still running and leave the folder alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def tidy_leftovers(out_dir: str | Path) -> list[str]:
    """Clean up after a run of this report that was killed (SIGKILL, power loss); return what was done.

    A killed run can leave, beside ``out_dir``, its unfinished staging folder (removed here when the
    process that wrote it is gone) and, if it died in the middle of the swap, the previous report
    under its temporary "old" name: that one is moved back when ``out_dir`` is missing, and removed
    when ``out_dir`` holds the newer report. Only folders carrying the report marker are touched.
    """
    out_dir = Path(out_dir)
    parent = out_dir.resolve().parent
    if not parent.is_dir():
        return []
    done = []
    for folder in sorted(parent.glob(f".{out_dir.name}.staging-*")):
        info = _marker(folder)
        if folder.is_dir() and info is not None and not _alive(info.get("pid")):
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed {folder.name}, the unfinished report of a run that was killed")
    olds = sorted(
        (f for f in parent.glob(f".{out_dir.name}.old-*") if f.is_dir() and _marker(f) is not None),
        key=lambda f: f.stat().st_mtime,
    )
    if olds and not out_dir.exists() and not out_dir.is_symlink():
        os.replace(olds.pop(), out_dir)
        done.append(f"restored the previous report into {out_dir} (a run was killed while replacing it)")
    if olds and is_report_folder(out_dir):
        for folder in olds:
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"removed {folder.name}, a report already replaced by {out_dir}")
    return done


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


def format_claims(results: dict[str, RecipeResult]) -> str:
    """The claims as printed at the end of the demo: one line per claim with its verdict and basis."""
    lines = []
    for name, result in results.items():
        for claim in result.claims:
            lines.append(f"{name}: {claim.verdict} [{claim.basis or 'basis not stated'}] {claim.claim}")
            lines.append(f"    measured: {claim.measured}")
    return "\n".join(lines)


def estimate_seconds_left(expected: Sequence[float], finished: Sequence[float], current_elapsed: float) -> float:
    """Seconds still to run, from the recipes' expected times and how long the finished ones took.

    Args:
        expected: every selected recipe's expected seconds, in run order.
        finished: the measured seconds of the first ``len(finished)`` recipes (those already done).
        current_elapsed: seconds spent so far in the recipe now running (index ``len(finished)``).

    This machine's speed is learnt from the finished recipes (measured / expected time) and applied
    to the rest; before any recipe has finished the expectations are taken as they are.
    """
    k = len(finished)
    if k > len(expected):
        raise HFTrustConfigError(
            f"{k} finished recipes but only {len(expected)} expected times; pass one expected time per recipe"
        )
    done_expected = sum(expected[:k])
    speed = sum(finished) / done_expected if k and done_expected > 0 else 1.0
    if k == len(expected):
        return 0.0
    current_left = max(expected[k] * speed - current_elapsed, 0.0)
    return current_left + speed * sum(expected[k + 1 :])


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``; ``8`` -> ``"8 s"``."""
    seconds = int(round(max(seconds, 0.0)))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class _Progress:
    """One overall bar (recipes done, estimated time left) and one bar for the recipe now running.

    A recipe's own bars (``ctx.progress``) sit below these two. A daemon thread refreshes the time
    left and the running recipe's elapsed time about once a second, because a recipe may spend
    minutes without touching any bar.
    """

    def __init__(self, recipes: Sequence[Recipe], interval: float = 1.0) -> None:
        self.recipes = list(recipes)
        self.expected = [max(float(r.minutes), 0.0) * 60.0 for r in self.recipes]
        self.finished: list[float] = []
        self.interval = interval
        self.overall = tqdm(total=len(self.recipes), desc="hf-trust demo", unit="recipe", position=0)
        self.bar: Optional[tqdm] = None
        self._t0 = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick_forever, name="hf-trust-demo-progress", daemon=True)
        self._thread.start()

    def start(self, index: int) -> None:
        with self._lock:
            self._t0 = time.time()
            # The bar counts seconds against the recipe's expected time; it stops just short of full
            # until the recipe returns, so a slow recipe never shows a finished bar.
            self.bar = tqdm(
                total=max(int(round(self.expected[index])), 1),
                desc=self._describe(index, 0.0),
                unit="s",
                position=1,
                leave=False,
                bar_format="{desc} {percentage:3.0f}%|{bar}|",
            )
        self._tick()

    def _describe(self, index: int, elapsed: float) -> str:
        expected = format_duration(self.expected[index])
        return f"{self.recipes[index].name}: {format_duration(elapsed)} of ~{expected}"

    def _tick(self) -> None:
        with self._lock:
            k = len(self.finished)
            elapsed = time.time() - self._t0 if self.bar is not None else 0.0
            left = estimate_seconds_left(self.expected, self.finished, elapsed)
            if k >= len(self.recipes):
                status = "done"
            elif left == estimate_seconds_left(self.expected, self.finished, float("inf")) and elapsed > 0:
                # The running recipe is past its estimate: say so rather than count down to zero.
                status = f"{self.recipes[k].name} is taking longer than estimated; ~{format_duration(left)} after it"
            else:
                status = f"{self.recipes[k].name}; ~{format_duration(left)} left"
            self.overall.set_postfix_str(status, refresh=True)
            if self.bar is not None:
                self.bar.n = min(int(elapsed), self.bar.total - 1)
                self.bar.set_description_str(self._describe(k, elapsed), refresh=True)

    def _tick_forever(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def finish(self, index: int, seconds: float, ok: bool, cpu_seconds: Optional[float] = None) -> None:
        with self._lock:
            self.finished.append(seconds)
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            self.overall.update(1)
        recipe = self.recipes[index]
        tqdm.write(
            f"[{recipe.name}] {'done' if ok else 'FAILED'} in {format_duration(seconds)} "
            f"(expected ~{format_duration(self.expected[index])})"
            + ("" if cpu_seconds is None else f", CPU time {format_duration(cpu_seconds)}")
        )
        self._tick()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            if self.bar is not None:
                self.bar.close()
            self.overall.close()


def _cell(text: Any) -> str:
    """One markdown table cell: pipes escaped, line breaks flattened."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _collect_plots(name: str, result: RecipeResult, root: Path, warnings: list[str]) -> list[str]:
    """Report-relative paths of the recipe's plots; plots saved outside the report are copied in."""
    rdir = root / name
    out = []
    for plot in result.plots:
        path = Path(plot)
        # ctx.savefig returns a path under ctx.out_dir, which is relative when --out is: relative to the
        # working directory, then; a bare name means the recipe's own folder.
        if not path.is_absolute() and not path.is_file():
            path = rdir / path
        if not path.is_file():
            warnings.append(f"{name}: plot {plot} was recorded but does not exist; it is missing from the report")
            continue
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:  # saved elsewhere: copy it in so the report stays self-contained
            target = rdir / path.name
            shutil.copyfile(path, target)
            rel = target.relative_to(root)
        out.append(rel.as_posix())
    if not any(p.lower().endswith(_IMAGE_SUFFIXES) for p in out):
        warnings.append(f"{name}: the recipe produced no picture")
    return out


def _recipe_section(name: str, title: str, result: RecipeResult, plots: list[str], meta: dict) -> list[str]:
    """The report section of one recipe that ran: its table, notes, pictures and times."""
    md = [f"## {name}: {title}", ""]
    if result.rows:
        md += ["| setting | metric | value | n | note |", "|---|---|---|---|---|"]
        for row in result.rows:
            md.append(
                f"| {_cell(row.setting)} | {_cell(row.metric)} | {row.formatted_value()} | "
                f"{'' if row.n is None else row.n} | {_cell(row.note)} |"
            )
    else:
        md.append("> **Warning:** this recipe returned no table rows.")
    md.append("")
    if result.notes:
        md += [f"- {note}" for note in result.notes] + [""]
    images = [p for p in plots if p.lower().endswith(_IMAGE_SUFFIXES)]
    for rel in plots:
        label = Path(rel).name
        md.append(f"![{label}]({rel})" if rel in images else f"[{label}]({rel})")
        md.append("")
    if not images:
        md += ["> **Warning:** this recipe produced no picture.", ""]
    md.append(f"Time: {format_duration(meta['times'][name])} (CPU time {format_duration(meta['cpu_times'][name])})")
    md.append("")
    return md


def _claims_section(results: dict[str, RecipeResult], names: Sequence[str], failures: dict[str, str]) -> list[str]:
    """The claims table: one row per claim of every recipe, a placeholder row for a failed or silent recipe."""
    md = [
        "## Claims",
        "",
        f"A verdict of this run rests on at least {MIN_SEEDS} seeds (the interval over them must exclude the "
        "control), or on the stored `--full` distribution where that many seeds do not fit the demo's time; "
        "the basis column says which. A row from fewer seeds is indicative only.",
        "",
        "| method | paper's claim | measured | basis of the verdict | verdict |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        if name in failures:
            md.append(f"| {name} | – | recipe failed (see its section) | – | – |")
        elif not results[name].claims:
            md.append(f"| {name} | – | **no claim recorded** | – | – |")
        for claim in results[name].claims if name in results else []:
            md.append(
                f"| {name} | {_cell(claim.claim)} | {_cell(claim.measured)} | {_cell(claim.basis or 'not stated')} "
                f"| {_cell(claim.verdict)} |"
            )
    md.append("")
    return md


def _markdown(
    results: dict[str, RecipeResult],
    recipes: dict[str, Recipe],
    failures: dict[str, str],
    plots: dict[str, list[str]],
    warnings: list[str],
    meta: dict,
) -> str:
    md = ["# hf-trust demo report", ""]
    md.append(
        f"Mode: {'full' if meta['full'] else 'default'}; device: {meta['device']}; "
        f"total time {format_duration(meta['seconds'])} (CPU time {format_duration(meta['cpu_seconds'])}); "
        f"written {meta['created']}."
    )
    md.append("")
    if warnings:
        md += ["## Warnings", ""] + [f"- {_cell(w)}" for w in warnings] + [""]
    for name in recipes:
        if name in failures:
            md += [f"## {name}: FAILED", "", "```", failures[name].strip(), "```", ""]
        else:
            md += _recipe_section(name, recipes[name].title, results[name], plots[name], meta)
    md += _claims_section(results, list(recipes), failures)
    return "\n".join(md)


def _adapter_paths(result: RecipeResult, root: Path, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Report-relative folders of the recipe's adapters, each with its card inputs.

    These are the adapters the recipe recorded with ``add_adapter`` plus any other folder holding an
    ``adapter_config.json`` that it left in its own folder.
    """
    rdir = root / name
    found: list[tuple[str, dict[str, Any]]] = []
    seen: set[Path] = set()
    for record in result.adapters:
        path = (record.path if record.path.is_absolute() else rdir / record.path).resolve()
        try:
            rel = path.relative_to(root.resolve())
        except ValueError:
            continue  # saved outside the report: not part of what this run hands over
        if (path / "adapter_config.json").is_file() and path not in seen:
            seen.add(path)
            extra = {"metrics": record.metrics, "evidence": record.evidence, "training_data": record.training_data}
            found.append((rel.as_posix(), extra))
    for cfg in sorted(rdir.rglob("adapter_config.json")):
        path = cfg.parent.resolve()
        # Trainer checkpoints hold adapter configs too; they are not what the recipe hands over.
        if any(part.startswith("checkpoint-") for part in cfg.relative_to(rdir).parts):
            continue
        if path not in seen:
            seen.add(path)
            found.append((path.relative_to(root.resolve()).as_posix(), {}))
    return found


def _push_adapters(
    adapters: dict[str, list[tuple[str, dict[str, Any]]]],
    out_dir: Path,
    endpoint: str,
    namespace: str,
    token: Optional[str],
) -> dict[str, str]:
    """Push every adapter of the report to ``endpoint``; return ``{report-relative folder: repo url}``."""
    from hf_trust.hub_cards import push_adapter

    pushed: dict[str, str] = {}
    for name, items in adapters.items():
        for rel, extra in items:
            path = out_dir / rel
            # One repository per adapter: the recipe's name, plus the folder when it saved several.
            tail = Path(rel).relative_to(name).as_posix().replace("/", "-") if rel != name else ""
            repo_name = f"hf-trust-demo-{name}" + (f"-{tail}" if tail else "")
            repo_id = f"{namespace}/{repo_name.replace('_', '-')}"
            info = push_adapter(
                path,
                repo_id,
                evidence=extra.get("evidence") or None,
                metrics=extra.get("metrics") or None,
                training_data=extra.get("training_data") or None,
                endpoint=endpoint,
                token=token,
                commit_message=f"hf-trust demo: {name} adapter with its measured evidence",
            )
            url = f"{endpoint.rstrip('/')}/{repo_id}"
            pushed[rel] = f"{url} (commit {info.oid})"
    return pushed


@contextlib.contextmanager
def _staging(out_dir: Path, parent: Path) -> Iterator[Path]:
    """``atomic_directory`` with its first write turned into a one-line :class:`DemoError`."""
    entered = built = False
    try:
        with atomic_directory(out_dir) as staging:
            entered = True
            yield staging
            built = True
    except OSError as exc:
        if built:  # the swap itself failed; atomic_directory has put the previous report back
            raise DemoError(
                f"could not move the new report into {out_dir} ({exc.strerror or exc}); "
                "the previous report there is unchanged"
            ) from exc
        if entered:
            raise
        # A real write probe: os.access says yes to root even on read-only file systems.
        raise DemoError(f"cannot write the report into {parent} ({exc.strerror}); pass a writable --out") from None


def _prepare_target(out_dir: Path) -> Path:
    """Refuse a target that could hold a user's files, clean up after a killed run; return the parent folder."""
    check_report_target(out_dir)
    for line in tidy_leftovers(out_dir):
        print(line)
    return check_report_target(out_dir)  # again: a restored previous report is a report


def _run_recipe(recipe: Recipe, ctx: RecipeContext) -> tuple[Optional[RecipeResult], Optional[str]]:
    """``(result, None)``, or ``(None, failure text)`` when the recipe raised: one recipe's failure is
    reported and the others still run."""
    try:
        result = recipe.run(ctx)
        if not isinstance(result, RecipeResult):
            raise HFTrustTypeError(
                f"recipe {recipe.name!r} returned {type(result).__name__}, not RecipeResult; return the "
                "RecipeResult the recipe filled"
            )
        return result, None
    except KeyboardInterrupt:
        raise
    except HFTrustError as exc:  # missing asset, unwritable cache: one clear line, no traceback
        failure = f"{type(exc).__name__}: {exc}"
        tqdm.write(f"[{recipe.name}] FAILED: {failure}")
    except Exception:
        failure = traceback.format_exc()
        tqdm.write(f"[{recipe.name}] FAILED: {failure.strip().splitlines()[-1]}")
    return None, failure


@dataclass
class _Run:
    """What the recipes of one demo run returned, with their wall and CPU times."""

    results: dict[str, RecipeResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    cpu_times: dict[str, float] = field(default_factory=dict)


def _run_recipes(
    selected: Sequence[Recipe],
    staging: Path,
    full: bool,
    seeds: Optional[Sequence[int]],
    device: str,
    progress_interval: float,
) -> _Run:
    """Run every selected recipe in its own folder under ``staging``, with the progress bars."""
    run = _Run()
    progress = _Progress(selected, interval=progress_interval)
    try:
        for index, recipe in enumerate(selected):
            rdir = staging / recipe.name
            rdir.mkdir()
            run_seeds = list(seeds) if seeds else list(recipe.full_seeds if full else recipe.quick_seeds)
            ctx = RecipeContext(out_dir=rdir, full=full, seeds=run_seeds, device=device, position=2)
            progress.start(index)
            t0, c0 = time.time(), time.process_time()
            result, failure = _run_recipe(recipe, ctx)
            if failure is None:
                run.results[recipe.name] = result
            else:
                run.failures[recipe.name] = failure
            run.times[recipe.name] = time.time() - t0
            # CPU time of this process: on a shared machine it is what the recipe would take alone
            # (the recipes run one torch thread), where the wall time also counts the other jobs.
            run.cpu_times[recipe.name] = time.process_time() - c0
            progress.finish(index, run.times[recipe.name], failure is None, run.cpu_times[recipe.name])
    finally:
        progress.close()
    return run


def _write_report(
    staging: Path, selected: Sequence[Recipe], run: _Run, meta: dict[str, Any]
) -> tuple[dict[str, list[tuple[str, dict[str, Any]]]], list[str]]:
    """Write README.md, results.json and the marker listing the report's files; return (adapters, warnings)."""
    warnings: list[str] = []
    results = run.results
    plots = {name: _collect_plots(name, res, staging, warnings) for name, res in results.items()}
    adapters = {name: _adapter_paths(res, staging, name) for name, res in results.items()}
    for name, res in results.items():
        if not res.claims:
            warnings.append(f"{name}: no claim recorded for the claims table")
    recipes = {r.name: r for r in selected}
    atomic_write_text(staging / "README.md", _markdown(results, recipes, run.failures, plots, warnings, meta))
    payload = {
        "meta": meta,
        "results": {
            n: {
                "rows": [r.__dict__ for r in res.rows],
                "notes": res.notes,
                "plots": plots[n],
                "claims": [c.__dict__ for c in res.claims],
                "adapters": [rel for rel, _ in adapters[n]],
            }
            for n, res in results.items()
        },
        "failures": run.failures,
        "warnings": warnings,
    }
    atomic_write_json(staging / "results.json", payload)
    # Written last, over everything else: the list is what a later run checks before replacing the folder.
    atomic_write_json(
        staging / REPORT_MARKER,
        {
            "generator": "hf-trust demo",
            "format": MARKER_FORMAT,
            "created": meta["created"],
            "complete": True,
            "pid": os.getpid(),
            **report_manifest(staging),
        },
    )
    return adapters, warnings


def _print_summary(results: dict[str, RecipeResult], warnings: Sequence[str], out_dir: Path) -> None:
    print()
    print(format_table(results) if any(r.rows for r in results.values()) else "(no results)")
    if any(r.claims for r in results.values()):
        print("\nClaims (verdict [basis] claim):")
        print(format_claims(results))
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"\nReport written to {out_dir}/README.md")


def run_demo(
    methods: Optional[Sequence[str]] = None,
    full: bool = False,
    out_dir: str | Path = "demo_report",
    seeds: Optional[Sequence[int]] = None,
    push_to: Optional[str] = None,
    push_namespace: str = "hf-trust-demo",
    push_token: Optional[str] = None,
    progress_interval: float = 1.0,
) -> dict[str, RecipeResult]:
    """Run the recipes and write ``out_dir/README.md``, ``results.json`` and each recipe's plots.

    Args:
        methods: recipe names (default: all).
        full: the larger setting whose figures go into ``benchmarks/RESULTS.md``.
        out_dir: the report folder. It must be new, empty, or a previous report holding only its own,
            unedited files (listed in :data:`REPORT_MARKER`); a previous report is replaced in one
            rename at the end.
        seeds: override the recipes' seeds.
        push_to: a Hub endpoint URL (e.g. a local Hub stand-in); when given, every adapter the
            recipes saved is pushed there with its card after the report is written. Off by default.
        push_namespace: the user or organisation the demo's repositories are created under.
        push_token: token for ``push_to`` (default: the token ``huggingface_hub`` finds).
        progress_interval: seconds between refreshes of the time-left estimate.

    Returns the results of the recipes that succeeded. A recipe that raises is reported as failed
    (its traceback goes into the report) and the others still run; the CLI exits non-zero then.
    """
    import torch

    out_dir = Path(out_dir)
    selected = _select(methods)
    parent = _prepare_target(out_dir)
    if push_to:
        # Fail before a long run, not after it: the namespace and the token are known now.
        from hf_trust.hub_cards.push import check_repo_id, resolve_token

        check_repo_id(f"{push_namespace}/hf-trust-demo")
        push_token = resolve_token(push_token)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start, cpu_start = time.time(), time.process_time()
    with _staging(out_dir, parent) as staging:
        # Marks the folder as an unfinished report of this process, so a later run can tell a folder
        # left by a killed run (safe to remove) from one still being written.
        atomic_write_json(
            staging / REPORT_MARKER, {"generator": "hf-trust demo", "complete": False, "pid": os.getpid()}
        )
        run = _run_recipes(selected, staging, full, seeds, device, progress_interval)
        meta = {
            "full": full,
            "device": device,
            "seconds": time.time() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "times": run.times,
            "cpu_times": run.cpu_times,
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        adapters, warnings = _write_report(staging, selected, run, meta)
        # Between the checks at the start and now the user may have put files into out_dir: check again
        # so that a report never replaces anything but a report.
        check_report_target(out_dir)
    _print_summary(run.results, warnings, out_dir)
    if push_to:
        # After the rename: the adapters now live under out_dir, where the user can find them.
        pushed = _push_adapters(adapters, out_dir, push_to, push_namespace, push_token)
        if not pushed:
            print(f"No adapters to push to {push_to}: no recipe saved one.")
        for folder, url in pushed.items():
            print(f"Pushed {out_dir / folder} -> {url}")
    if run.failures:
        raise DemoError(f"recipe(s) failed: {', '.join(run.failures)} (details in {out_dir}/README.md)")
    return run.results


def describe_recipes(recipes: Optional[dict[str, Recipe]] = None) -> str:
    """The ``hf-trust demo --list`` text: one line per method with its expected time, then the total."""
    recipes = available_recipes() if recipes is None else recipes
    total = sum(r.minutes for r in recipes.values())
    times = {name: f"~{r.minutes:g} min" for name, r in recipes.items()}
    width = max([len(n) for n in recipes] + [len("total")])
    twidth = max([len(t) for t in times.values()] + [len(f"~{total:g} min")])
    lines = [f"{name:{width}s}  {times[name]:{twidth}s}  {r.title}" for name, r in recipes.items()]
    lines.append(
        f"{'total':{width}s}  {f'~{total:g} min':{twidth}s}  (default setting: CPU time measured on a shared 2-core VM, warm caches; --full takes longer)"
    )
    return "\n".join(lines)


__all__ = [
    "MARKER_FORMAT",
    "REPORT_MARKER",
    "foreign_entry",
    "report_manifest",
    "tidy_leftovers",
    "check_report_target",
    "describe_recipes",
    "estimate_seconds_left",
    "format_duration",
    "format_claims",
    "format_table",
    "is_report_folder",
    "run_demo",
]
