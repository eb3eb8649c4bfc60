"""The demo report folder: a user's files are never replaced, a previous report survives a crash,
every picture and claim reaches the report, and the progress display estimates the time left.

The recipes here are fakes registered by this module (names start with ``zz_``); the real recipes are
never run by these tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hf_trust.cli import main
from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.registry import VERDICTS
from hf_trust.demo.runner import (
    REPORT_MARKER,
    check_report_target,
    describe_recipes,
    estimate_seconds_left,
    run_demo,
    tidy_leftovers,
)
from hf_trust.errors import DemoError

# Eight bytes of PNG signature are enough: the report links files, it does not decode them.
_PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@register_recipe("zz_value", title="returns one computed value", minutes=0.02)
def _value(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    result.add("setting", "seed sum", sum(ctx.seeds))
    return result


@register_recipe("zz_interrupt", title="stops like Ctrl-C mid-run", minutes=0.02)
def _interrupt(ctx: RecipeContext) -> RecipeResult:
    (ctx.out_dir / "partial.txt").write_text("half a result")
    raise KeyboardInterrupt


@register_recipe("zz_pics", title="two pictures and a claim", minutes=0.05)
def _pics(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    result.add("toy", "accuracy", 0.75, n=4)
    for name in ("curve.png", "heatmap.png"):
        path = ctx.out_dir / name
        path.write_bytes(_PNG + name.encode())
        result.add_plot(path)
    result.add_claim("method beats the baseline", "0.75 vs 0.50 (n = 4)", "reproduced", seeds=4)
    result.add_claim("it is also faster", "1.3x slower | at this size", "not at this size", seeds=1)
    return result


@register_recipe("zz_bare", title="no picture, no claim", minutes=0.05)
def _bare(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    result.add("toy", "loss", 1.5)
    return result


_OUTSIDE: dict[str, Path] = {}


@register_recipe("zz_outside", title="saves its picture outside the report", minutes=0.01)
def _outside(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    result.add_plot(_OUTSIDE["png"])
    result.add_claim("x", "y", "not reproduced")
    return result


@register_recipe("zz_slow", title="takes a moment", minutes=0.01)
def _slow(ctx: RecipeContext) -> RecipeResult:
    time.sleep(0.4)
    return RecipeResult()


def _report(out: Path) -> str:
    return (out / "README.md").read_text()


# ---- the output folder: never a user's files ------------------------------------------------------


def test_foreign_folder_is_refused_and_its_files_survive(tmp_path, capsys):
    out = tmp_path / "my_work"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("1,2,3")
    assert main(["demo", "--methods", "zz_value", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an hf-trust report" in err[0] and REPORT_MARKER in err[0]
    assert (out / "thesis.tex").read_text() == "three years of work"
    assert (out / "sub" / "data.csv").read_text() == "1,2,3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_work"]  # no staging folder left behind


def test_out_dot_and_parents_of_the_working_directory_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    (work / "code.py").write_text("print(1)")
    # Even a folder that carries the marker is refused when it is the working directory.
    (work / REPORT_MARKER).write_text("{}")
    monkeypatch.chdir(work)
    for target in (".", "..", str(work)):
        with pytest.raises(DemoError, match="working directory"):
            run_demo(["zz_value"], out_dir=target)
    assert (work / "code.py").read_text() == "print(1)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_symlink_and_file_targets_are_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(DemoError, match="symbolic link"):
        check_report_target(tmp_path / "link")
    (tmp_path / "f").write_text("keep")
    with pytest.raises(DemoError, match="not a folder"):
        check_report_target(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "keep"


def test_new_and_empty_folders_are_accepted_and_every_report_carries_the_marker(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        run_demo(["zz_value"], out_dir=out, seeds=[2, 5])
        marker = json.loads((out / REPORT_MARKER).read_text())
        assert marker["generator"] == "hf-trust demo"
        assert json.loads((out / "results.json").read_text())["results"]["zz_value"]["rows"][0]["value"] == 7.0


def test_previous_report_is_replaced_whole(tmp_path):
    out = tmp_path / "report"
    run_demo(["zz_pics", "zz_value"], out_dir=out, seeds=[1])
    assert (out / "zz_pics" / "curve.png").is_file()
    run_demo(["zz_value"], out_dir=out, seeds=[3])
    assert json.loads((out / "results.json").read_text())["results"]["zz_value"]["rows"][0]["value"] == 3.0
    assert not (out / "zz_pics").exists()  # nothing of the old report is mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # old copy removed after the swap


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (``None``) under ``folder``, marker included."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_report_marker_lists_every_file_of_the_report_with_its_sha256(tmp_path):
    import hashlib

    out = tmp_path / "report"
    run_demo(["zz_pics", "zz_value"], out_dir=out)
    marker = json.loads((out / REPORT_MARKER).read_text())
    files = {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in out.rglob("*")
        if p.is_file() and p.name != REPORT_MARKER
    }
    assert marker["files"] == files
    assert set(files) >= {"README.md", "results.json", "zz_pics/curve.png", "zz_pics/heatmap.png"}
    assert sorted(marker["dirs"]) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_dir())


@pytest.mark.parametrize(
    "change, named",
    [
        ("notes", "the file my_notes.md in it was not written by the demo"),
        ("plots", "the folder my_plots/ in it was not written by the demo"),
        ("nested", "the file zz_pics/my_fig.png in it was not written by the demo"),
        ("edit", "the report file README.md in it was edited after the demo wrote it"),
        ("old_marker", "does not list the report's files"),
    ],
)
def test_rerun_refuses_a_report_holding_a_users_file_and_keeps_everything(tmp_path, capsys, change, named):
    out = tmp_path / "rep"
    args = ["demo", "--methods", "zz_pics", "--out", str(out)]
    assert main(args) == 0
    if change == "notes":
        (out / "my_notes.md").write_text("what I saw in the run")
    elif change == "plots":
        (out / "my_plots").mkdir()
        (out / "my_plots" / "fig.png").write_bytes(_PNG + b"mine")
    elif change == "nested":
        (out / "zz_pics" / "my_fig.png").write_bytes(_PNG + b"mine")
    elif change == "edit":
        (out / "README.md").write_text(_report(out) + "\nMy comments on the claims.\n")
    else:  # a report written before the marker listed its files
        (out / REPORT_MARKER).write_text(json.dumps({"generator": "hf-trust demo", "format": 1, "complete": True}))
    capsys.readouterr()
    before = _tree(out)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and str(out) in err[0] and "pass a new --out" in err[0]
    assert _tree(out) == before  # every file, the user's and the report's, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no staging folder left behind


def test_rerun_replaces_an_untouched_report_and_one_missing_a_file(tmp_path):
    out = tmp_path / "rep"
    run_demo(["zz_pics"], out_dir=out)
    run_demo(["zz_pics"], out_dir=out)  # untouched: replaced
    (out / "zz_pics" / "heatmap.png").unlink()  # deleting one of the report's files loses nothing of the user's
    run_demo(["zz_value"], out_dir=out, seeds=[2])
    assert json.loads((out / "results.json").read_text())["results"]["zz_value"]["rows"][0]["value"] == 2.0
    assert not (out / "zz_pics").exists()


def test_a_users_file_added_during_the_run_is_not_replaced(tmp_path):
    out = tmp_path / "rep"
    run_demo(["zz_value"], out_dir=out, seeds=[1])

    @register_recipe("zz_user_writes", title="the user saves a note into the old report meanwhile", minutes=0.01)
    def _user_writes(ctx: RecipeContext) -> RecipeResult:
        (out / "note.txt").write_text("written while the demo ran")
        return RecipeResult()

    with pytest.raises(DemoError, match="note.txt"):
        run_demo(["zz_user_writes"], out_dir=out)
    assert (out / "note.txt").read_text() == "written while the demo ran"
    assert json.loads((out / "results.json").read_text())["results"]["zz_value"]["rows"][0]["value"] == 1.0


def test_interrupted_run_leaves_previous_report_intact(tmp_path):
    out = tmp_path / "report"
    run_demo(["zz_value"], out_dir=out, seeds=[4])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        run_demo(["zz_value", "zz_interrupt"], out_dir=out, seeds=[9])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_crash_while_swapping_in_the_new_report_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "report"
    run_demo(["zz_value"], out_dir=out, seeds=[4])
    before = _report(out)
    real_replace, real_rename = os.replace, os.rename

    def crash_on_swap(real):
        # The move of a freshly built report onto the target fails (disk full, power cut, kill);
        # putting the old report back (a folder named ".report.old-...") still works.
        def move(src, dst, *args, **kwargs):
            if Path(dst) == out and ".old-" not in Path(src).name:
                raise OSError(28, "simulated crash while moving the new report into place")
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(os, "replace", crash_on_swap(real_replace))
    monkeypatch.setattr(os, "rename", crash_on_swap(real_rename))
    with pytest.raises(DemoError, match="simulated crash.*previous report there is unchanged"):
        run_demo(["zz_value"], out_dir=out, seeds=[8])
    monkeypatch.undo()
    assert _report(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # staging and old copy cleaned up
    assert json.loads((out / "results.json").read_text())["results"]["zz_value"]["rows"][0]["value"] == 4.0


# ---- the report: one picture per method and the claims table ---------------------------------------


def test_report_embeds_every_picture_and_the_claims_table(tmp_path, capsys):
    outside = tmp_path / "elsewhere" / "scatter.png"
    outside.parent.mkdir()
    outside.write_bytes(_PNG + b"scatter")
    _OUTSIDE["png"] = outside
    out = tmp_path / "report"
    run_demo(["zz_pics", "zz_bare", "zz_outside"], out_dir=out)
    text = _report(out)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images == ["zz_pics/curve.png", "zz_pics/heatmap.png", "zz_outside/scatter.png"]
    for rel in images:  # every link resolves, relative to the README, to the bytes the recipe wrote
        assert (out / rel).read_bytes() == _PNG + Path(rel).stem.encode() + (b".png" if "zz_pics" in rel else b"")
    # The claims table comes last and has one row per claim, plus a visible row for the silent recipe.
    claims = text[text.index("## Claims") :].splitlines()
    assert "at least 3 seeds" in claims[2]
    assert claims[4:6] == [
        "| method | paper's claim | measured | basis of the verdict | verdict |",
        "|---|---|---|---|---|",
    ]
    assert claims[6:10] == [
        "| zz_pics | method beats the baseline | 0.75 vs 0.50 (n = 4) | 4 seeds, min..max over seeds | reproduced |",
        "| zz_pics | it is also faster | 1.3x slower \\| at this size | 1 seed, indicative | not at this size |",
        "| zz_bare | – | **no claim recorded** | – | – |",
        "| zz_outside | x | y | not stated | not reproduced |",
    ]
    assert text.index("## zz_outside") < text.index("## Claims")
    # The recipe with no picture and no claim is called out in the report and on the console.
    bare = text[text.index("## zz_bare") : text.index("## zz_outside")]
    assert "> **Warning:** this recipe produced no picture." in bare
    warnings = text[text.index("## Warnings") : text.index("## zz_pics")]
    assert "zz_bare: the recipe produced no picture" in warnings
    assert "zz_bare: no claim recorded" in warnings and "zz_pics" not in warnings
    printed = capsys.readouterr().out
    assert "warning: zz_bare: the recipe produced no picture" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["results"]["zz_pics"]["claims"][0] == {
        "claim": "method beats the baseline",
        "measured": "0.75 vs 0.50 (n = 4)",
        "verdict": "reproduced",
        "basis": "4 seeds, min..max over seeds",
    }
    assert data["results"]["zz_outside"]["plots"] == ["zz_outside/scatter.png"]


def test_failed_recipe_has_a_claims_row(tmp_path):
    @register_recipe("zz_boom", title="raises", minutes=0.01)
    def _boom(ctx: RecipeContext) -> RecipeResult:
        raise RuntimeError("broken recipe")

    out = tmp_path / "r"
    with pytest.raises(DemoError, match="zz_boom"):
        run_demo(["zz_pics", "zz_boom"], out_dir=out)
    text = _report(out)
    assert "| zz_boom | – | recipe failed (see its section) | – | – |" in text
    assert "RuntimeError: broken recipe" in text


def test_verdicts_are_checked():
    with pytest.raises(ValueError, match="verdict"):
        RecipeResult().add_claim("c", "m", "sort of")
    assert VERDICTS == ("reproduced", "not at this size", "not reproduced")


def test_a_verdict_from_fewer_than_three_seeds_is_indicative_and_never_reproduced():
    result = RecipeResult()
    one = result.add_claim("c", "m", "reproduced", seeds=1)
    assert (one.verdict, one.basis) == ("not at this size", "1 seed, indicative (reproduced needs ≥ 3 seeds)")
    two = result.add_claim("c", "m", "not reproduced", seeds=2)
    assert (two.verdict, two.basis) == ("not reproduced", "2 seeds, indicative")
    three = result.add_claim("c", "m", "reproduced", seeds=3, interval="min..max of the gain over seeds")
    assert (three.verdict, three.basis) == ("reproduced", "3 seeds, min..max of the gain over seeds")
    stored = result.add_claim("c", "m", "not reproduced", seeds=1, stored="benchmarks/results/x.md, 10 seeds")
    assert (stored.verdict, stored.basis) == (
        "not reproduced",
        "stored distribution (not this run): benchmarks/results/x.md, 10 seeds",
    )


def test_seed_interval_is_min_max_ignoring_nan():
    from hf_trust.demo.registry import seed_interval

    assert seed_interval([0.3, float("nan"), 0.9, 0.5]) == (0.3, 0.9)
    lo, hi = seed_interval([float("nan")])
    assert lo != lo and hi != hi  # no seed measured: no interval


# ---- progress and expected times -------------------------------------------------------------------


def test_time_left_estimate():
    # Nothing finished yet: the expectations as they are, minus what the running recipe has spent.
    assert estimate_seconds_left([60, 120, 30], [], 20) == 40 + 120 + 30
    # The first recipe took twice its expected time: the rest are scaled by 2.
    assert estimate_seconds_left([60, 120, 30], [120], 50) == (240 - 50) + 60
    # A recipe past its (scaled) expectation counts as finishing now, not as negative time.
    assert estimate_seconds_left([60, 120, 30], [30], 100) == 0 + 15
    assert estimate_seconds_left([60, 120], [60, 100], 0) == 0
    with pytest.raises(ValueError):
        estimate_seconds_left([60], [1, 2], 0)


def test_progress_shows_overall_and_recipe_bars_with_time_left(tmp_path, capsys):
    run_demo(["zz_slow", "zz_value"], out_dir=tmp_path / "r", progress_interval=0.05)
    captured = capsys.readouterr()
    err = captured.err
    assert "hf-trust demo" in err
    # One bar per recipe, with the time spent and the recipe's expected time.
    assert re.search(r"zz_slow: \d+ s of ~1 s", err) and re.search(r"zz_value: \d+ s of ~1 s", err)
    assert re.search(r"zz_slow; ~\d+ s left", err)  # the overall bar names the recipe and the time left
    # tqdm.write prints the per-recipe summary line on stdout, above the bars.
    assert re.search(r"\[zz_slow\] done in \d+ s \(expected ~1 s\), CPU time \d+ s", captured.out)


def test_demo_list_shows_every_method_with_its_expected_time(capsys):
    assert main(["demo", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.match(r"^zz_pics +~0\.05 min +two pictures and a claim$", next(x for x in lines if "zz_pics" in x))
    assert re.match(r"^zz_slow +~0\.01 min +takes a moment$", next(x for x in lines if "zz_slow" in x))
    assert lines[-1].startswith("total")
    from hf_trust.demo import available_recipes

    recipes = available_recipes()
    assert len(lines) == len(recipes) + 1
    total = float(re.search(r"~([\d.]+) min", lines[-1]).group(1))
    assert total == pytest.approx(sum(r.minutes for r in recipes.values()), rel=1e-5, abs=1e-6)
    assert describe_recipes() == "\n".join(lines)


# ---- leftovers of a killed run ---------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_run_leftovers_are_cleaned_and_only_ours(tmp_path):
    out = tmp_path / "report"
    dead = tmp_path / ".report.staging-dead"
    live = tmp_path / ".report.staging-live"
    foreign = tmp_path / ".report.staging-foreign"
    for folder, pid in ((dead, _dead_pid()), (live, os.getpid())):
        folder.mkdir()
        (folder / REPORT_MARKER).write_text(json.dumps({"generator": "hf-trust demo", "complete": False, "pid": pid}))
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not a report")
    run_demo(["zz_value"], out_dir=out)
    assert not dead.exists()  # its writer is gone
    assert live.is_dir() and (foreign / "mine.txt").read_text() == "not a report"


def test_report_lost_mid_swap_is_restored(tmp_path, capsys):
    out = tmp_path / "report"
    run_demo(["zz_value"], out_dir=out, seeds=[6])
    before = _report(out)
    # A kill between the two renames of the swap leaves the previous report under its "old" name only.
    os.replace(out, tmp_path / ".report.old-abc123")
    assert tidy_leftovers(out) == [f"restored the previous report into {out} (a run was killed while replacing it)"]
    assert _report(out) == before
    # An "old" copy next to a newer report is removed.
    shutil.copytree(out, tmp_path / ".report.old-def456")
    run_demo(["zz_value"], out_dir=out, seeds=[7])
    assert "removed .report.old-def456, a report already replaced by" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


_KILLED_RUN = """
import sys, time
from hf_trust.demo import RecipeResult, register_recipe
from hf_trust.demo.runner import run_demo

@register_recipe("zz_hang", title="hangs until killed", minutes=0.01)
def hang(ctx):
    (ctx.out_dir / "started").write_text("1")
    time.sleep(600)
    return RecipeResult()

run_demo(["zz_hang"], out_dir=sys.argv[1])
"""


def test_sigkill_mid_run_keeps_previous_report_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "report"
    run_demo(["zz_value"], out_dir=out, seeds=[5])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(out)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(tmp_path.glob(".report.staging-*/zz_hang/started")):
        assert proc.poll() is None and time.time() < deadline, "the run did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert len(list(tmp_path.glob(".report.staging-*"))) == 1  # what SIGKILL leaves behind
    run_demo(["zz_value"], out_dir=out, seeds=[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_overall_bar_says_when_a_recipe_runs_over_its_estimate():
    from hf_trust.demo.registry import Recipe
    from hf_trust.demo.runner import _Progress

    recipes = [Recipe("aa", "t", _value, minutes=0.01), Recipe("bb", "t", _value, minutes=1.0)]
    progress = _Progress(recipes, interval=3600)  # no background refresh: ticks are driven by hand
    try:
        progress.start(0)
        progress._t0 -= 30  # 30 s into a recipe expected to take 0.6 s
        progress._tick()
        assert progress.overall.postfix == "aa is taking longer than estimated; ~1 min 00 s after it"
        progress.finish(0, 30.6, True)
        progress.start(1)
        progress._tick()
        # The first recipe took 51x its estimate, so the second is expected to take 51 x 60 s.
        assert re.fullmatch(r"bb; ~(50 min 59|51 min 00) s left", progress.overall.postfix)
    finally:
        progress.close()


_SWEEP_MD = """# BYE

| trigger | poison | seeds | ASR / CP before | rule | precision | recall | removed | status ok | ASR after | ASR after ≤ 0.05 | CP after |
|---|---|---|---|---|---|---|---|---|---|---|---|
| patch | 10 % | 5 | 0.93 / 1.00 | robust | 0.97 ± 0.06 | 0.68 ± 0.23 | 0.07 ± 0.03 | 5/5 | 0.46 ± 0.42 | 1/5 | 1.00 ± 0.00 |

| trigger | poison | seeds | ASR / CP before | rule | precision | recall | removed | status ok | ASR after | ASR after ≤ 0.05 | CP after |
|---|---|---|---|---|---|---|---|---|---|---|---|
| blend | 10 % | 10 | 0.60 / 0.98 | robust | 0.50 ± 0.42 | 0.39 ± 0.35 | 0.12 ± 0.09 | 10/10 | 0.42 ± 0.39 | 4/10 | 0.97 ± 0.08 |
| patch | 10 % | 10 | 0.96 / 1.00 | robust | 0.99 ± 0.04 | 0.68 ± 0.27 | 0.07 ± 0.03 | 10/10 | 0.38 ± 0.37 | 3/10 | 1.00 ± 0.00 |
| patch | 10 % | 10 | 0.96 / 1.00 | bsi2 | 0.47 ± 0.35 | 0.96 ± 0.10 | 0.31 ± 0.16 | 8/10 | 0.00 ± 0.01 | 10/10 | 0.87 ± 0.11 |
"""


def test_bye_rule_verdicts_read_the_stored_ten_seed_row_of_the_quick_setting(tmp_path):
    from hf_trust.demo.recipes.bye import stored_toy_sweep

    md = tmp_path / "bye.md"
    md.write_text(_SWEEP_MD, encoding="utf-8")
    # The patch / 10 % / 10-seed row, not the 5-seed table above it nor the blend row.
    assert stored_toy_sweep("robust", md) == {
        "gone": 3,
        "seeds": 10,
        "asr_before": 0.96,
        "cp_before": 1.0,
        "cp_after": 1.0,
    }
    assert stored_toy_sweep("bsi2", md)["gone"] == 10 and stored_toy_sweep("bsi2", md)["cp_after"] == 0.87
    assert stored_toy_sweep("reference", md) is None  # no such row: the recipe falls back to its own seed
    # The file in this checkout: the counts its headline states.
    for rule, gone in (("reference", 6), ("bsi2", 10), ("robust", 3)):
        row = stored_toy_sweep(rule)
        assert row is not None and (row["gone"], row["seeds"]) == (gone, 10)


def test_stored_rows_read_one_table_by_its_first_header_cell(tmp_path):
    from hf_trust.demo.registry import stored_number, stored_rows

    md = tmp_path / "m.md"
    md.write_text(
        "| arm | target | general |\n|---|---|---|\n| LoRA | **4.177 ± 0.051** | −0.548 ± 0.25 |\n\ntext\n\n"
        "| scenario | zero-shot |\n|---|---|\n| domain shift | 0.318 |\n"
        "| a | b | c |\n",  # a malformed row of the scenario table (three cells): skipped
        encoding="utf-8",
    )
    assert stored_rows("x", "arm", md) == [{"arm": "LoRA", "target": "4.177 ± 0.051", "general": "−0.548 ± 0.25"}]
    assert stored_rows("x", "scenario", md) == [{"scenario": "domain shift", "zero-shot": "0.318"}]
    assert stored_rows("x", "nothing", md) == []
    assert stored_number("−0.548 ± 0.25") == -0.548 and stored_number("−0.548 ± 0.25", 1) == 0.25
    assert stored_number("0.457 [0.39, 0.52]", 2) == 0.52
    with pytest.raises(ValueError, match="no number 1"):
        stored_number("0.318", 1)


def test_stored_verdict_sources_in_this_checkout_hold_the_rows_the_recipes_read():
    from hf_trust.demo.recipes.cot_kinetics import _stored_detection
    from hf_trust.demo.registry import stored_rows

    (energy, lo, hi), (best, (b, blo, bhi)) = _stored_detection()
    assert lo <= energy <= hi and blo <= b <= bhi and best == "MaxProb" and b > hi  # energy below MaxProb
    arms = {r["arm"] for r in stored_rows("lorasculpt", "arm")}
    assert {"LoRASculpt, 60 steps", "LoRA at matched target NLL"} <= arms
    assert any(r["scenario"] == "domain shift" and "VPT" in r for r in stored_rows("fpl", "scenario"))


def test_stored_sources_of_ggeur_thanora_acgkd_and_epeagent_are_read_from_the_results_files():
    """The quick recipes of GGEUR, ThanoRA, ACGKD and EPEAgent read their verdicts from these stored multi-seed rows:
    each reader must find them in this checkout, with the numbers the files state."""
    from hf_trust.demo.recipes.ggeur import _stored_label_skew
    from hf_trust.demo.recipes.thanora import _stored_demo_seeds
    from hf_trust.demo.registry import stored_number, stored_rows

    ggeur = _stored_label_skew(0.1)
    assert ggeur is not None and set(ggeur) == {"FedAvg", "+oversample", "+GGEUR"}
    assert all(0 < mean < 1 and 0 <= std < 0.2 for mean, std in ggeur.values())
    assert _stored_label_skew(0.3) is None  # no such row
    seeds = _stored_demo_seeds()
    assert [s for s, _, _ in seeds] == [0, 1, 2]  # the summary row "mean ± sd" is not a seed
    assert all(lora > 0 and th > 0 for _, lora, th in seeds)
    from hf_trust.demo.recipes.acgkd import STORED_TASKS, _stored_full, _verdict

    acgkd = _stored_full(list(STORED_TASKS))
    assert set(acgkd) == set(STORED_TASKS) and all(len(acc) == 3 for acc, _ in acgkd.values())
    assert all(((0 < ratio) & (ratio < 1.5)).all() for _, ratio in acgkd.values())
    # The rule: reproduced only if every seed reaches 0.95 of its teacher, not reproduced if one sits at chance.
    chance = dict.fromkeys(STORED_TASKS, 0.4)
    ok = {t: (np.array([0.9, 0.9, 0.9]), np.array([0.96, 0.97, 1.0])) for t in STORED_TASKS}
    assert _verdict(ok, chance) == "reproduced"
    one_low = {t: (np.array([0.9, 0.9, 0.9]), np.array([0.96, 0.90, 1.0])) for t in STORED_TASKS}
    assert _verdict(one_low, chance) == "not at this size"
    at_chance = {t: (np.array([0.9, 0.4, 0.9]), np.array([0.96, 0.45, 1.0])) for t in STORED_TASKS}
    assert _verdict(at_chance, chance) == "not reproduced"
    both = {r["arm"]: r for r in stored_rows("epeagent", "arm") if r.get("domain") == "both"}
    for arm in ("untrained SmolLM2", "TRL-trained SmolLM2"):
        assert 0 <= stored_number(both[arm]["context leakage"]) <= 1
        assert 0 <= stored_number(both[arm]["value leakage"], 1) <= 1


def test_thanora_mixture_verdict_needs_every_seed():
    from hf_trust.demo.recipes.thanora import _mixture_verdict

    assert _mixture_verdict(np.array([0.1, 0.2, 0.3])) == "reproduced"
    assert _mixture_verdict(np.array([-1.934, 1.351, 0.765])) == "not at this size"  # 2 of 3, mean > 0
    assert _mixture_verdict(np.array([-1.0, 0.2, 0.3])) == "not reproduced"  # mean < 0
