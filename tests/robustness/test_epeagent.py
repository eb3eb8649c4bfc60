"""EPEAgent robustness: undeliverable policy labels, atomic and keyed policy cache, atomic ledger, public API."""

from __future__ import annotations

import ast
import json
import os
import warnings
from pathlib import Path

import pytest

import hf_trust.agents as agents_api
from hf_trust.agents import (
    AgentSpec,
    DataFlowLedger,
    EPEOrchestrator,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    make_agents,
    summarise,
)
from hf_trust.errors import HFTrustConfigError


def _echo(messages, tools=None):
    return "\n".join(str(m.get("content", "")) for m in messages)


def _profile_with_orphan_label():
    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    prof["preferred_order_type"] = dict(prof["preferred_order_type"], label=[7])  # agent 7 does not exist
    return prof


# ---------------------------------------------------------------------------------------------- undeliverable
def test_label_no_agent_carries_is_an_error_with_a_privacy_agent():
    prof = _profile_with_orphan_label()
    with pytest.raises(HFTrustConfigError, match=r"preferred_order_type.*\[7\].*on_undeliverable"):
        EPEOrchestrator(make_agents("financial", _echo), PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof)))


def test_label_no_agent_carries_is_an_error_in_the_baseline_too():
    prof = _profile_with_orphan_label()
    orch = EPEOrchestrator(make_agents("financial", _echo))
    with pytest.raises(HFTrustConfigError, match="preferred_order_type"):
        orch.run(prof, {"question": "q"})


def test_warn_mode_reports_the_field_as_undeliverable():
    prof = _profile_with_orphan_label()
    policy = PrivacyPolicy.from_labels(prof)
    with pytest.warns(UserWarning, match="preferred_order_type"):
        orch = EPEOrchestrator(make_agents("financial", _echo), PrivacyEnhancingAgent(policy), on_undeliverable="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ledger = orch.run(prof, {"question": "q"})
    assert ledger.undeliverable == ["preferred_order_type"]
    rep = ledger.report()
    assert rep.undeliverable == ["preferred_order_type"]
    assert summarise([], [], ledger)["undeliverable"] == ["preferred_order_type"]
    # the field really reached nobody
    assert not any(e.field == "preferred_order_type" for e in ledger.entries)


def test_deliberately_private_field_is_not_undeliverable():
    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    prof["preferred_order_type"] = dict(prof["preferred_order_type"], label=[])  # private to every agent
    orch = EPEOrchestrator(make_agents("financial", _echo), PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof)))
    _, ledger = orch.run(prof, {"question": "q"})
    assert ledger.undeliverable == [] and ledger.report().leakage == 0.0


def test_on_undeliverable_is_validated():
    with pytest.raises(HFTrustConfigError, match="on_undeliverable"):
        EPEOrchestrator(make_agents("financial", _echo), on_undeliverable="ignore")


# ---------------------------------------------------------------------------------------------- policy cache
FIELDS = {"risk_tolerance": "risk", "preferred_order_type": "orders"}


def _labeller(calls):
    def labeller(messages, tools=None):
        calls.append(messages[-1]["content"])
        return "yes" if "Risk" in messages[-1]["content"] else "no"

    return labeller


def test_policy_cache_is_keyed_on_agents_fields_and_labeller(tmp_path):
    path = tmp_path / "policy.json"
    calls = []
    agents = make_agents("financial", None)
    p1 = PrivacyPolicy.from_llm(agents, FIELDS, _labeller(calls), cache_path=path, labeller_id="m1")
    assert len(calls) == 6
    PrivacyPolicy.from_llm(agents, FIELDS, _labeller(calls), cache_path=path, labeller_id="m1")
    assert len(calls) == 6  # reused
    for change in (
        dict(labeller_id="m2"),
        dict(fields={**FIELDS, "risk_tolerance": "appetite for losses"}),
        dict(
            agents=[
                AgentSpec(a.name, a.label_id, a.role_prompt, None, a.self_description + " Also audits.") for a in agents
            ]
        ),
    ):
        kw = dict(agents=agents, fields=FIELDS, labeller_id="m1") | change
        before = len(calls)
        with pytest.warns(UserWarning, match="recomputing"):
            p = PrivacyPolicy.from_llm(
                kw["agents"], kw["fields"], _labeller(calls), cache_path=path, labeller_id=kw["labeller_id"]
            )
        assert len(calls) == before + 6, change
        assert json.loads(path.read_text())["cache_key"] == p.cache_key_
    assert p1.cache_key_ != p.cache_key_


def test_policy_cache_needs_a_labeller_id(tmp_path):
    with pytest.raises(HFTrustConfigError, match="labeller_id"):
        PrivacyPolicy.from_llm(make_agents("financial", None), FIELDS, _labeller([]), cache_path=tmp_path / "p.json")


def test_corrupt_policy_cache_is_rebuilt(tmp_path):
    path = tmp_path / "policy.json"
    calls = []
    agents = make_agents("financial", None)
    good = PrivacyPolicy.from_llm(agents, FIELDS, _labeller(calls), cache_path=path, labeller_id="m1")
    path.write_text(path.read_text()[:25])  # truncated by a crash of some other writer
    with pytest.warns(UserWarning, match="unreadable"):
        again = PrivacyPolicy.from_llm(agents, FIELDS, _labeller(calls), cache_path=path, labeller_id="m1")
    assert len(calls) == 12 and again == good
    assert PrivacyPolicy.load(path) == good


def _fail_replace(monkeypatch):
    import hf_trust.atomic as atomic

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)


def test_policy_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "policy.json"
    PrivacyPolicy({"a": [1]}).save(path)
    before = path.read_bytes()
    _fail_replace(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        PrivacyPolicy({"a": [1, 2], "b": [3]}).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["policy.json"]  # no temporary file left behind


def test_ledger_jsonl_is_atomic(tmp_path, monkeypatch):
    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    orch = EPEOrchestrator(make_agents("financial", _echo), PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof)))
    _, ledger = orch.run(prof, {"question": "q"})
    path = tmp_path / "ledger.jsonl"
    ledger.to_jsonl(path)
    before = path.read_bytes()
    assert len(before.splitlines()) == len(ledger) > 0
    ledger.extend(DataFlowLedger(entries=list(ledger.entries)))
    _fail_replace(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        ledger.to_jsonl(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ledger.jsonl"]


# ---------------------------------------------------------------------------------------------- public API
def test_public_api_has_no_test_backends():
    for name in ("ScriptedBackend", "EchoBackend", "ConstantBackend", "RecordingBackend"):
        assert name not in agents_api.__all__
        assert not hasattr(agents_api, name), name
    for name in agents_api.__all__:
        assert getattr(agents_api, name) is not None, name


def test_agents_library_does_not_import_harness_or_assets():
    root = Path(agents_api.__file__).resolve().parent
    bad = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            bad += [
                (path.name, m)
                for m in mods
                if m.split(".")[:2] in (["hf_trust", "demo"], ["hf_trust", "assets"], ["hf_trust", "cli"])
            ]
    assert not bad


# ---------------------------------------------------------------------------------------------- bad backends / data
def test_backend_returning_none_is_an_error_naming_the_agent():
    """A backend that returns ``None`` must not hand the string "None" on as the agent's answer."""
    from hf_trust.errors import HFTrustError

    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    agents = make_agents("financial", _echo)
    agents[1].backbone = lambda messages, tools=None: None
    orch = EPEOrchestrator(agents, PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof)))
    with pytest.raises(HFTrustError, match=r"risk_assessment.*returned None"):
        orch.run(prof, {"question": "q"})


def test_rewrite_backend_returning_none_is_an_error_naming_the_privacy_agent():
    from hf_trust.errors import HFTrustError

    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof), rewrite_backend=lambda messages, tools=None: None)
    orch = EPEOrchestrator(make_agents("financial", _echo), pa)
    with pytest.raises(HFTrustError, match=r"rewrite_backend.*returned None"):
        orch.run(prof, {"question": "q"})


def test_profile_field_without_value_is_a_data_error_naming_the_field():
    """An entry with a label but no ``value`` has nothing to measure: leakage 0 / recall 1 would be vacuous."""
    from hf_trust.agents import LeakageDetector
    from hf_trust.errors import HFTrustDataError

    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    del prof["annual_income"]["value"]
    with pytest.raises(HFTrustDataError, match=r"annual_income.*'value'"):
        LeakageDetector(prof)
    orch = EPEOrchestrator(make_agents("financial", _echo), PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof)))
    with pytest.raises(HFTrustDataError, match=r"annual_income.*'value'"):
        orch.run(prof, {"question": "q"})
