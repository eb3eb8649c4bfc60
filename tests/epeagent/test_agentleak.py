"""EPEAgent runs exported to AgentLeak and judged by AgentLeak's own analysis (an independent scanner)."""

from __future__ import annotations

import sys

import pytest

from hf_trust.agents import (
    REDACTED,
    DataFlowLedger,
    EPEOrchestrator,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    make_agents,
    make_profile_tool,
    to_agentleak,
)
from hf_trust.agents.export import flow_violations
from hf_trust.errors import MissingExtraError

from .scripted import EchoBackend, ScriptedBackend

agentleak = pytest.importorskip("agentleak")


def _run(domain: str, n_users: int, privacy_agent: bool, rag: str = "context") -> DataFlowLedger:
    profiles = generate_profiles(domain, n_users=n_users, seed=5)
    ledger = DataFlowLedger()
    tool = make_profile_tool({p["user_id"]: p for p in profiles}) if rag == "tool" else None
    for prof in profiles:
        agents = make_agents(domain, EchoBackend(tool_args={"user_id": prof["user_id"]}))
        pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof)) if privacy_agent else None
        EPEOrchestrator(agents, pa, rag=rag, retrieval_tool=tool).run(prof, {"question": "Proceed?"}, ledger=ledger)
    return ledger


def _agentleak_violations(ledger: DataFlowLedger) -> tuple[set, int]:
    """AgentLeak's flow violations as (episode, recipient, field), and how many flows it judged permitted."""
    out, permitted = set(), 0
    for ep, (trace, config) in enumerate(to_agentleak(ledger)):
        result = agentleak.AgentLeakRunner(config).analyze(trace)
        assert not result.warnings, result.warnings  # no degraded tier: the verdict is AgentLeak's full verdict
        out |= {(ep, rec, f) for rec, f in flow_violations(result)}
        permitted += sum(d["permitted"] for d in _decisions(config, result))
    return out, permitted


def _decisions(config, result) -> list[dict]:
    from agentleak.core.contextual_integrity import evaluate_flows, parse_flow_rules

    rules = parse_flow_rules(config.privacy_policy.flows)
    return [d.to_dict() for d in evaluate_flows(rules, result.findings).decisions]


def _denied_delivered(ledger: DataFlowLedger) -> set:
    """Ground truth for the baseline: every non-permitted field whose entry was handed to the recipient."""
    out = set()
    for d in ledger.deliveries:
        if d.channel != "rag":
            continue
        record = ledger.records[d.episode]
        for f, entry in record.items():
            if f == "user_id" or f in ledger.permitted[(d.episode, d.recipient)] or entry["value"] in ([], {}):
                continue
            if f"- {f}:" in d.text:
                out.add((d.episode, d.recipient, f))
    return out


@pytest.mark.parametrize("domain", ["financial", "medical"])
def test_without_privacy_agent_agentleak_flags_every_non_permitted_delivered_field(domain):
    ledger = _run(domain, n_users=3, privacy_agent=False)
    truth = _denied_delivered(ledger)
    found, permitted = _agentleak_violations(ledger)
    ours = {(ep, rec, f) for ep, rec, f, _ in ledger.report().leaks}
    assert len(truth) >= 3 * 5 and found == truth and ours == truth
    assert permitted > 0  # AgentLeak also saw the permitted flows and let them pass


@pytest.mark.parametrize("domain", ["financial", "medical"])
def test_with_the_rule_agent_agentleak_finds_nothing_where_our_detector_finds_nothing(domain):
    ledger = _run(domain, n_users=3, privacy_agent=True)
    found, permitted = _agentleak_violations(ledger)
    ours = {(ep, rec, f) for ep, rec, f, _ in ledger.report().leaks}
    assert found <= ours, found - ours
    assert permitted > 0


def test_export_events_carry_sender_and_recipient_on_the_inter_agent_channel():
    ledger = _run("financial", n_users=1, privacy_agent=True, rag="tool")
    ((trace, config),) = to_agentleak(ledger)
    channels = {e.channel_value for e in trace.events}
    assert channels == {"inter_agent_message"}  # retrieved data too: tool_response is never judged
    data = [d for d in ledger.deliveries if d.channel != "question"]
    assert [(e.source, e.target, e.content) for e in trace.events] == [(d.sender, d.recipient, d.text) for d in data]
    assert {d.channel for d in data} >= {"tool", "context"}
    assert {e.source for e in trace.events} >= {"profile_store", "market_data", "risk_assessment"}
    # built-in detectors off, one value detector per field with a value, one flow rule per such field
    assert not any(config.detectors.as_dict().values())
    fields = [c.data_type for c in config.custom_detectors]
    assert len(fields) == len(set(fields)) == len(config.privacy_policy.flows)
    deny = [r for r in config.privacy_policy.flows if r.get("deny")]
    assert all(r["to"] == "*" for r in deny)


def test_value_detectors_read_reformatted_values():
    prof = {
        "user_id": "u",
        "annual_income": {"value": 62000, "label": [1]},
        "birth": {"value": "1945-09-18", "label": [1]},
        "family_history": {"value": "breast cancer", "label": [1]},
    }
    ledger = DataFlowLedger()
    text = "income $62,000 / sixty-two thousand; born 18.09.1945; history: Breast-Cancer"
    ledger.record("exec", 3, "context", text, prof, lambda f: False, sender="risk")
    ledger.record("risk", 1, "rag", "x", prof, lambda f: True)
    ((trace, config),) = to_agentleak(ledger)
    result = agentleak.AgentLeakRunner(config).analyze(trace)
    assert flow_violations(result) == {("exec", "annual_income"), ("exec", "birth"), ("exec", "family_history")}


def test_placeholder_is_not_read_as_a_value_by_agentleak():
    """AgentLeak's key-name detector reads "[REDACTED]" after a sensitive key as a value; ours it skips."""
    runner = agentleak.AgentLeakRunner(agentleak.Config())

    def findings(placeholder: str) -> list:
        trace = agentleak.Trace()
        trace.add_event("inter_agent_message", f"Allergies: {placeholder}. Diagnosis: {placeholder}", source="a")
        return runner.analyze(trace).findings

    assert findings("[REDACTED]")  # the old placeholder: a false finding
    assert REDACTED == "<redacted>" and findings(REDACTED) == []


def test_missing_agentleak_is_a_missing_extra_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "agentleak", None)
    ledger = DataFlowLedger()
    ledger.record("r", 1, "rag", "x", {"a": {"value": "alpha", "label": [1]}}, lambda f: True)
    with pytest.raises(MissingExtraError, match=r"agentleak.*hf-trust\[agents\]"):
        to_agentleak(ledger)


def test_an_encoded_copy_is_caught_by_both_scanners():
    """An upstream agent base64-encodes a value the terminal agent may not see; the rule agent passes it."""
    import base64

    prof = generate_profiles("financial", n_users=1, seed=2)[0]
    secret = f"risk tolerance {prof['risk_tolerance']['value']}"
    agents = make_agents("financial", EchoBackend())
    agents[1].backbone = ScriptedBackend(lambda m, t: "ref " + base64.b64encode(secret.encode()).decode())
    pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof))
    _, ledger = EPEOrchestrator(agents, pa).run(prof, {"question": "q"})
    ours = {(rec, f): forms for _, rec, f, forms in ledger.report().leaks}
    assert ours[("transaction_execution", "risk_tolerance")] == ("encoded",)
    ((trace, config),) = to_agentleak(ledger)
    assert ("transaction_execution", "risk_tolerance") in flow_violations(
        agentleak.AgentLeakRunner(config).analyze(trace)
    )
