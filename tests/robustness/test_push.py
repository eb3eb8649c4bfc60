# ruff: noqa: F811  (the hub_server fixture is imported from the foundation tests)
"""Publishing an adapter with its evidence: card trust report filled from what was measured, the
measured scores in the Hub's ``.eval_results`` format (read back with huggingface_hub's own parser),
clear errors for bad repo ids, missing or refused tokens and malformed evidence, the demo's
optional push to a Hub stand-in, the base model named by its Hub id (a local path refused or resolved),
dry runs, and the card written beside a saved adapter.

The Hub is the recording loopback server of ``tests/foundation/test_hub_cards.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml
from huggingface_hub.repocard_data import model_index_to_eval_results
from peft import LoraConfig, get_peft_model
from sklearn.metrics import roc_auc_score

from hf_trust.cli import main
from hf_trust.demo import RecipeContext, RecipeResult, register_recipe
from hf_trust.demo.runner import run_demo
from hf_trust.errors import HFTrustConfigError, HFTrustError
from hf_trust.hub_cards import EVAL_RESULTS_PATH, push_adapter, write_adapter_card
from hf_trust.hub_cards._eval_compat import HUB_HAS_EVAL_RESULTS, EvalResultEntry, parse_eval_result_entries
from hf_trust.hub_cards.card import PEFT_PLACEHOLDER
from tests.conftest import make_tiny_llama
from tests.foundation.test_hub_cards import _front_matter, commit_files, hub_server  # noqa: F401  (fixture)

NO_EVAL_RESULTS = (
    "huggingface_hub < 1 has no .eval_results format; the model-index fallback is tested by "
    "test_without_eval_results_support_the_scores_go_to_the_model_index"
)

# A BYE report as BYEReport.save writes it (only the fields the card reads matter here).
BYE = {
    "status": "ok",
    "num_samples": 12,
    "num_layers": 4,
    "sensitive_layers": [2],
    "suspicious": [False, True, False, False, True, False, False, True, False, False, False, False],
    "removed_fraction": 0.25,
    "warnings": [],
}
FORGETTING = {
    "metric": "accuracy",
    "general_before": 0.50,
    "general_after": 0.46,
    "baseline_general_after": 0.40,
    "tolerance": 0.02,
    "dataset_id": "hf-trust/general-mix",
    "task_id": "arc_easy",
}
COT = {
    "scores": [0.9, 0.2, 0.7, 0.4, 0.8, 0.3, 0.65, 0.5],
    "correct": [1, 0, 1, 1, 0, 0, 1, 0],
    "dataset_id": "hf-trust/gsm-symbolic",
    "task_id": "default",
}
EXTRA = [{"dataset": {"id": "cais/hle", "task_id": "default"}, "value": 0.031, "notes": "no-tools"}]


@pytest.fixture
def adapter_dir(tmp_path) -> Path:
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    model.peft_config["default"].base_model_name_or_path = "local/tiny-llama"
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    """No token anywhere huggingface_hub looks: environment, stored login."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def _expected_entries() -> list[EvalResultEntry]:
    """Recomputed here from the inputs, not from the code under test."""
    accuracy = sum(COT["correct"]) / len(COT["correct"])
    return [
        EvalResultEntry(
            dataset_id="hf-trust/general-mix",
            task_id="arc_easy",
            value=0.46,
            notes="hf-trust forgetting check: general accuracy after fine-tuning (before: 0.5)",
        ),
        EvalResultEntry(
            dataset_id="hf-trust/gsm-symbolic",
            task_id="default",
            value=accuracy,
            notes="hf-trust: answer accuracy on the 8 traces scored by CoT-Kinetics",
        ),
        EvalResultEntry(dataset_id="cais/hle", task_id="default", value=0.031, notes="no-tools"),
    ]


def _check_upload(files: dict[str, bytes]) -> dict:
    # The evaluation results, read back with huggingface_hub's own parser.
    entries = parse_eval_result_entries(yaml.safe_load(files[EVAL_RESULTS_PATH].decode()))
    assert entries == _expected_entries()
    meta = _front_matter(files["README.md"].decode())
    report = meta["hf_trust"]["trust_report"]
    bye = report["backdoor scan"]
    assert bye["status"] == "flagged"
    assert bye["metrics"] == {"rows_scored": 12, "rows_removed": sum(BYE["suspicious"]), "sensitive_layers": [2]}
    forgetting = report["forgetting"]
    # 0.50 -> 0.46 is 0.04 of forgetting, above the 0.02 tolerance.
    assert forgetting["status"] == "flagged"
    assert forgetting["metrics"]["forgetting"] == pytest.approx(0.04)
    assert forgetting["metrics"]["plain LoRA general after"] == 0.40
    cot = report["reasoning confidence"]
    assert cot["status"] == "measured"
    assert cot["metrics"]["AUROC (right vs wrong)"] == pytest.approx(roc_auc_score(COT["correct"], COT["scores"]))
    assert cot["metrics"]["mean confidence"] == pytest.approx(sum(COT["scores"]) / 8)
    assert report["privacy leakage"]["status"] == "not checked"
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    return meta


@pytest.mark.skipif(not HUB_HAS_EVAL_RESULTS, reason=NO_EVAL_RESULTS)
def test_push_adapter_uploads_card_and_eval_results(hub_server, adapter_dir):
    endpoint, calls = hub_server
    before = {p.name: p.read_bytes() for p in adapter_dir.iterdir()}
    info = push_adapter(
        adapter_dir,
        "me/sculpted",
        evidence={"bye_report": BYE, "forgetting": FORGETTING, "cot_kinetics": COT},
        eval_results=EXTRA,
        endpoint=endpoint,
        token="hf_test",
    )
    assert info.oid == "abc123"
    meta = _check_upload(commit_files(calls))
    assert "model-index" not in meta  # the legacy format only on request
    assert {p.name: p.read_bytes() for p in adapter_dir.iterdir()} == before  # the user's folder untouched


def test_legacy_model_index_fallback_matches_eval_results(hub_server, adapter_dir):
    endpoint, calls = hub_server
    push_adapter(
        adapter_dir,
        "me/legacy",
        evidence={"forgetting": FORGETTING, "cot_kinetics": COT},
        eval_results=EXTRA,
        legacy_model_index=True,
        endpoint=endpoint,
        token="hf_test",
    )
    meta = _front_matter(commit_files(calls)["README.md"].decode())
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == "legacy"
    expected = _expected_entries()
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in results] == [
        (e.dataset_id, e.task_id, e.value) for e in expected
    ]


@pytest.mark.skipif(not HUB_HAS_EVAL_RESULTS, reason=NO_EVAL_RESULTS)
def test_cli_push_reads_evidence_files(hub_server, adapter_dir, tmp_path, capsys):
    endpoint, calls = hub_server
    paths = {}
    for name, data in (("bye.json", BYE), ("forgetting.json", FORGETTING), ("cot.json", COT)):
        paths[name] = tmp_path / name
        paths[name].write_text(json.dumps(data))
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(EXTRA))
    argv = ["push", str(adapter_dir), "--repo-id", "me/from-cli", "--endpoint", endpoint, "--token", "hf_test"]
    argv += ["--bye-report", str(paths["bye.json"]), "--forgetting", str(paths["forgetting.json"])]
    argv += ["--cot-kinetics", str(paths["cot.json"]), "--eval-results", str(tmp_path / "extra.yaml")]
    assert main(argv) == 0
    assert "commit abc123" in capsys.readouterr().out
    assert json.loads(calls[0][1])["name"] == "from-cli"
    _check_upload(commit_files(calls))


@pytest.mark.parametrize(
    "repo_id", ["no-slash", "a/b/c", "me/bad--name", "me/", "/name", "me/x..y", "me/" + "x" * 100, "me/sp ace"]
)
def test_bad_repo_ids_are_refused_before_any_upload(hub_server, adapter_dir, repo_id):
    endpoint, calls = hub_server
    with pytest.raises(HFTrustConfigError, match="repo_id"):
        push_adapter(adapter_dir, repo_id, endpoint=endpoint, token="hf_test")
    assert calls == []


def test_cli_bad_repo_id_is_one_line(adapter_dir, capsys):
    assert main(["push", str(adapter_dir), "--repo-id", "me/bad--name"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a valid Hub repository id" in err[0] and "'user/name'" in err[0]


def test_missing_token_is_a_clear_error_and_nothing_is_sent(hub_server, adapter_dir, no_token, capsys):
    endpoint, calls = hub_server
    with pytest.raises(HFTrustConfigError, match="no Hub token.*HF_TOKEN.*hf auth login"):
        push_adapter(adapter_dir, "me/x", endpoint=endpoint)
    assert calls == []
    assert main(["push", str(adapter_dir), "--repo-id", "me/x", "--endpoint", endpoint]) == 2
    assert "no Hub token" in capsys.readouterr().err


def test_token_from_environment_is_used(hub_server, adapter_dir, no_token, monkeypatch):
    endpoint, calls = hub_server
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    push_adapter(adapter_dir, "me/env", endpoint=endpoint)
    assert [p for p, _ in calls][-1].startswith("/api/models/me/env/commit/")


def test_refused_token_names_the_fix(hub_server, adapter_dir):
    endpoint, _ = hub_server
    with pytest.raises(HFTrustConfigError, match=r"refused the token \(HTTP 401\).*write access"):
        push_adapter(adapter_dir, "me/x", endpoint=endpoint, token="hf_revoked")


def test_unreachable_endpoint_names_it(adapter_dir):
    with pytest.raises(HFTrustError, match=r"cannot reach the Hub at http://127\.0\.0\.1:9"):
        push_adapter(adapter_dir, "me/x", endpoint="http://127.0.0.1:9", token="hf_test")


@pytest.mark.parametrize(
    "evidence, message",
    [
        ({"forgetting": {"general_before": 0.5}}, "forgetting: missing 'general_after'"),
        ({"forgetting": {"general_before": 0.5, "general_after": "high"}}, "'general_after' must be a number"),
        ({"cot_kinetics": {"scores": [0.1, float("nan")]}}, "NaN or inf"),
        ({"cot_kinetics": {"scores": [0.1, 0.2], "correct": [1]}}, "1 'correct' labels for 2 scores"),
        ({"bye_report": [1, 2]}, "bye_report: expected a JSON object"),
        ({"privacy": {}}, "unknown evidence"),
    ],
)
def test_malformed_evidence_names_the_field(adapter_dir, evidence, message):
    with pytest.raises(HFTrustConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        push_adapter(adapter_dir, "me/x", evidence=evidence, token="hf_test", endpoint="http://127.0.0.1:9")


def test_malformed_eval_results_file(adapter_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"value": 0.5}]))  # no dataset
    assert main(["push", str(adapter_dir), "--repo-id", "me/x", "--eval-results", str(bad), "--token", "t"]) == 2
    err = capsys.readouterr().err
    assert "entry 0 is not an evaluation result" in err and "dataset" in err
    assert main(["push", str(adapter_dir), "--repo-id", "me/x", "--forgetting", str(tmp_path / "nope.json")]) == 2
    assert "--forgetting" in capsys.readouterr().err


# ---- the demo pushes its adapters only when asked ------------------------------------------------------


@register_recipe("zz_adapter", title="saves a tiny adapter with its forgetting numbers", minutes=0.05)
def _adapter_recipe(ctx: RecipeContext) -> RecipeResult:
    result = RecipeResult()
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(ctx.out_dir / "adapter")
    result.add_adapter(ctx.out_dir / "adapter", metrics={"toy score": 0.5}, evidence={"forgetting": FORGETTING})
    # A second adapter the recipe did not record is still found (any adapter_config.json in its folder).
    model.save_pretrained(ctx.out_dir / "lora_control")
    # Trainer checkpoints are not published.
    model.save_pretrained(ctx.out_dir / "run" / "checkpoint-5")
    return result


@pytest.mark.skipif(not HUB_HAS_EVAL_RESULTS, reason=NO_EVAL_RESULTS)
def test_demo_pushes_its_adapters_to_a_hub_stand_in_and_says_where(hub_server, tmp_path, capsys):
    endpoint, calls = hub_server
    out = tmp_path / "report"
    run_demo(["zz_adapter"], out_dir=out, push_to=endpoint, push_namespace="me", push_token="hf_test")
    printed = capsys.readouterr().out
    assert f"Pushed {out / 'zz_adapter/adapter'} -> {endpoint}/me/hf-trust-demo-zz-adapter-adapter" in printed
    assert f"Pushed {out / 'zz_adapter/lora_control'} -> {endpoint}/me/hf-trust-demo-zz-adapter-lora-control" in printed
    created = [json.loads(d)["name"] for p, d in calls if p == "/api/repos/create"]
    assert created == ["hf-trust-demo-zz-adapter-adapter", "hf-trust-demo-zz-adapter-lora-control"]
    commits = [p for p, _ in calls if "/commit/" in p]
    assert len(commits) == 2
    first = [d for p, d in calls if "/commit/" in p][0]
    files = commit_files([("/commit/", first)])
    meta = _front_matter(files["README.md"].decode())
    assert meta["hf_trust"]["metrics"] == {"toy score": 0.5}
    assert meta["hf_trust"]["trust_report"]["forgetting"]["status"] == "flagged"
    assert parse_eval_result_entries(yaml.safe_load(files[EVAL_RESULTS_PATH].decode())) == _expected_entries()[:1]
    data = json.loads((out / "results.json").read_text())
    assert data["results"]["zz_adapter"]["adapters"] == ["zz_adapter/adapter", "zz_adapter/lora_control"]


def test_demo_saved_adapters_carry_the_hf_trust_card(tmp_path):
    out = tmp_path / "report"
    run_demo(["zz_adapter"], out_dir=out)
    card = (out / "zz_adapter" / "adapter" / "README.md").read_text()
    assert PEFT_PLACEHOLDER not in card
    meta = _front_matter(card)
    assert meta["hf_trust"]["metrics"] == {"toy score": 0.5}
    forgetting = meta["hf_trust"]["trust_report"]["forgetting"]
    assert forgetting["status"] == "flagged"
    assert forgetting["metrics"]["forgetting"] == pytest.approx(
        FORGETTING["general_before"] - FORGETTING["general_after"]
    )
    # A folder the recipe did not record keeps what save_pretrained wrote.
    assert PEFT_PLACEHOLDER in (out / "zz_adapter" / "lora_control" / "README.md").read_text()


def test_demo_push_without_token_fails_before_running(hub_server, tmp_path, no_token, capsys):
    endpoint, calls = hub_server
    out = tmp_path / "report"
    assert main(["demo", "--methods", "zz_adapter", "--out", str(out), "--push-to", endpoint]) == 2
    assert "no Hub token" in capsys.readouterr().err
    assert calls == [] and not out.exists()  # nothing ran, nothing was written


def test_demo_does_not_push_by_default(hub_server, tmp_path, capsys, monkeypatch):
    endpoint, calls = hub_server
    # Even with a reachable Hub configured as the default endpoint, nothing is pushed without --push-to.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    run_demo(["zz_adapter"], out_dir=tmp_path / "report")
    assert calls == []
    assert "Pushed" not in capsys.readouterr().out


# ---- the base model is published by its Hub id; a dry run shows what would be uploaded -----------------

HUB_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _local_base_adapter(tmp_path: Path, name_or_path: str | None) -> tuple[Path, Path]:
    """An adapter whose config names a local base folder (as the demo's do); that folder's config.json
    records ``name_or_path`` as ``_name_or_path`` (``None``: no config.json at all)."""
    base = tmp_path / "cache" / "smollm2"
    base.mkdir(parents=True)
    if name_or_path is not None:
        (base / "config.json").write_text(
            json.dumps({"_name_or_path": name_or_path, "model_type": "llama", "vocab_size": 128})
        )
    model = get_peft_model(make_tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    model.peft_config["default"].base_model_name_or_path = str(base)
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    return folder, base


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name_or_path", [None, "", "/home/me/models/smollm2"])
def test_local_base_model_is_refused_naming_the_flag(hub_server, tmp_path, capsys, name_or_path):
    endpoint, calls = hub_server
    folder, base = _local_base_adapter(tmp_path, name_or_path)
    with pytest.raises(HFTrustConfigError, match=rf"base model '{base}' .*local path.*--base-model ORG/NAME"):
        push_adapter(folder, "me/x", endpoint=endpoint, token="hf_test")
    with pytest.raises(HFTrustConfigError, match="--base-model"):
        push_adapter(folder, "me/x", dry_run_dir=tmp_path / "dry")
    # An explicit local folder is refused the same way.
    with pytest.raises(HFTrustConfigError, match="given as --base-model"):
        push_adapter(folder, "me/x", base_model=str(base), endpoint=endpoint, token="hf_test")
    argv = ["push", str(folder), "--repo-id", "me/x", "--endpoint", endpoint, "--token", "hf_test"]
    capsys.readouterr()  # only what the command prints below
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--base-model" in err[0] and str(base) in err[0]
    assert calls == [] and not (tmp_path / "dry").exists()


def test_an_existing_relative_folder_is_a_path_not_a_hub_id(hub_server, tmp_path, monkeypatch):
    # "cache/smollm2" reads like "org/name", but from_pretrained would load the folder of that name here.
    endpoint, calls = hub_server
    folder, _ = _local_base_adapter(tmp_path, None)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "cache/smollm2"}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HFTrustConfigError, match="base model 'cache/smollm2' .*local path"):
        push_adapter(folder, "me/x", endpoint=endpoint, token="hf_test")
    assert calls == []


def test_local_base_with_a_hub_id_in_its_config_is_published_by_that_id(hub_server, tmp_path, capsys):
    endpoint, calls = hub_server
    folder, base = _local_base_adapter(tmp_path, HUB_BASE)
    argv = ["push", str(folder), "--repo-id", "me/x", "--endpoint", endpoint, "--token", "hf_test"]
    assert main(argv) == 0
    assert f"Base model: {HUB_BASE} (the _name_or_path in {base / 'config.json'}" in capsys.readouterr().out
    files = commit_files(calls)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == HUB_BASE
    assert _front_matter(files["README.md"].decode())["base_model"] == HUB_BASE


def test_base_model_id_is_written_into_the_uploaded_copy_only(hub_server, tmp_path):
    endpoint, calls = hub_server
    folder, base = _local_base_adapter(tmp_path, None)
    before = _snapshot(folder)
    push_adapter(folder, "me/x", base_model=HUB_BASE, endpoint=endpoint, token="hf_test")
    files = commit_files(calls)
    uploaded, original = json.loads(files["adapter_config.json"]), json.loads(before["adapter_config.json"])
    assert original["base_model_name_or_path"] == str(base)
    # The copy differs from the user's config in that one field, and the card names the same id.
    assert uploaded == {**original, "base_model_name_or_path": HUB_BASE}
    meta = _front_matter(files["README.md"].decode())
    assert meta["base_model"] == HUB_BASE
    assert f'from_pretrained("{HUB_BASE}")' in files["README.md"].decode()
    assert files["adapter_model.safetensors"] == before["adapter_model.safetensors"]
    assert _snapshot(folder) == before  # the user's folder, byte for byte


@pytest.mark.skipif(not HUB_HAS_EVAL_RESULTS, reason=NO_EVAL_RESULTS)
def test_dry_run_writes_exactly_what_a_push_uploads_and_sends_nothing(hub_server, tmp_path, no_token, capsys):
    endpoint, calls = hub_server
    folder, _ = _local_base_adapter(tmp_path, None)
    before = _snapshot(folder)
    kwargs = {"evidence": {"bye_report": BYE, "forgetting": FORGETTING, "cot_kinetics": COT}, "eval_results": EXTRA}
    dry = tmp_path / "dry"
    # No token anywhere: a dry run needs none, and sends nothing.
    assert push_adapter(folder, "me/x", base_model=HUB_BASE, dry_run_dir=dry, endpoint=endpoint, **kwargs) == dry
    assert calls == []
    written = _snapshot(dry)
    push_adapter(folder, "me/x", base_model=HUB_BASE, endpoint=endpoint, token="hf_test", **kwargs)
    assert written == commit_files(calls)  # the same files, byte for byte, as the upload
    _check_upload(written)
    assert _snapshot(folder) == before
    # The command line: the same files, listed, in an empty folder that already exists.
    (tmp_path / "dry2").mkdir()
    argv = ["push", str(folder), "--repo-id", "me/x", "--base-model", HUB_BASE, "--dry-run", "--out"]
    assert main([*argv, str(tmp_path / "dry2"), "--eval-results", str(_write(tmp_path / "e.yaml", EXTRA))]) == 0
    out = capsys.readouterr().out
    assert "nothing was uploaded" in out
    for name in ("README.md", "adapter_config.json", "adapter_model.safetensors", EVAL_RESULTS_PATH):
        assert f"  {name}  (" in out
    assert json.loads((tmp_path / "dry2" / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_BASE


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_dry_run_refuses_a_non_empty_folder(hub_server, adapter_dir, tmp_path, capsys):
    endpoint, calls = hub_server
    out = tmp_path / "dry"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HFTrustConfigError, match=r"dry_run_dir .* \(--out\) is not an empty folder"):
        push_adapter(adapter_dir, "me/x", dry_run_dir=out, endpoint=endpoint, token="hf_test")
    argv = ["push", str(adapter_dir), "--repo-id", "me/x", "--dry-run", "--out", str(out)]
    assert main(argv) == 2 and "not an empty folder" in capsys.readouterr().err
    assert main(["push", str(adapter_dir), "--repo-id", "me/x", "--dry-run"]) == 2
    assert "--dry-run and --out DIR go together" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert calls == []


def test_saved_adapter_card_replaces_peft_template_and_is_carried_by_a_push(hub_server, tmp_path):
    endpoint, calls = hub_server
    folder, _ = _local_base_adapter(tmp_path, None)
    assert PEFT_PLACEHOLDER in (folder / "README.md").read_text()  # what save_pretrained left
    metrics = {"mean answer NLL": 1.25}
    write_adapter_card(folder, base_model=HUB_BASE, metrics=metrics, evidence={"forgetting": FORGETTING})
    text = (folder / "README.md").read_text()
    assert PEFT_PLACEHOLDER not in text
    meta = _front_matter(text)
    assert meta["base_model"] == HUB_BASE and meta["hf_trust"]["metrics"] == metrics
    forgetting = meta["hf_trust"]["trust_report"]["forgetting"]
    assert forgetting["status"] == "flagged"
    assert forgetting["metrics"]["forgetting"] == pytest.approx(
        FORGETTING["general_before"] - FORGETTING["general_after"]
    )
    # A later push of the folder, with no flags: the card's base model and evidence are kept.
    push_adapter(folder, "me/x", endpoint=endpoint, token="hf_test")
    files = commit_files(calls)
    pushed = _front_matter(files["README.md"].decode())
    assert PEFT_PLACEHOLDER not in files["README.md"].decode()
    assert pushed["base_model"] == HUB_BASE
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == HUB_BASE
    assert pushed["hf_trust"]["trust_report"] == meta["hf_trust"]["trust_report"]
    assert pushed["hf_trust"]["metrics"] == metrics
    # A README the package did not write is never replaced.
    (folder / "README.md").write_text("# my own notes\n")
    with pytest.raises(HFTrustConfigError, match="overwrite=True"):
        write_adapter_card(folder, base_model=HUB_BASE)
    assert (folder / "README.md").read_text() == "# my own notes\n"


def test_without_eval_results_support_the_scores_go_to_the_model_index(hub_server, adapter_dir, monkeypatch, caplog):
    """On a huggingface_hub without ``EvalResultEntry`` (the floor stack's 0.36) the measured scores are written as
    the card's model-index, with a warning naming the version, and no ``.eval_results`` file is sent."""
    import hf_trust.hub_cards.push as push_module

    monkeypatch.setattr(push_module, "HUB_HAS_EVAL_RESULTS", False)
    endpoint, calls = hub_server
    with caplog.at_level("WARNING", logger="hf_trust.hub_cards.push"):
        push_adapter(
            adapter_dir,
            "me/old-hub",
            evidence={"forgetting": FORGETTING, "cot_kinetics": COT},
            eval_results=EXTRA,
            endpoint=endpoint,
            token="hf_test",
        )
    files = commit_files(calls)
    assert EVAL_RESULTS_PATH not in files
    assert "predates the Hub's .eval_results format" in caplog.text
    _, results = model_index_to_eval_results(_front_matter(files["README.md"].decode())["model-index"])
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in results] == [
        (e.dataset_id, e.task_id, e.value) for e in _expected_entries()
    ]
