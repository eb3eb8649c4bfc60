"""Adversarial upstream agents: a non-permitted value reformatted, split, partly revealed or paraphrased.

Each case is one upstream message that carries the value of a field the terminal agent may not see.  Without a
privacy agent the detector must flag it by the form it claims; with the rule-based privacy agent the value must
be gone from the terminal's prompt for every form the agent claims to stop.  The forms it does not stop are
listed in ``NOT_STOPPED`` and marked ``xfail(strict=True)``: if the agent learns to stop one, that test fails
and the list must be updated.
"""

from __future__ import annotations

import base64

import pytest

from hf_trust.agents import AgentSpec, DataFlowLedger, EPEOrchestrator, PrivacyEnhancingAgent, PrivacyPolicy
from hf_trust.agents.leakage import Exposure, measure_leakage

from .scripted import EchoBackend, ScriptedBackend

PROFILE = {
    "user_id": "adv-1",
    "name": {"value": "Alice Keller", "description": "Full name.", "label": [2]},
    "annual_income": {"value": 62000, "description": "Income per year.", "label": [2]},
    "date_of_birth": {"value": "1984-03-07", "description": "Birth date.", "label": [2]},
    "account_number": {"value": "4111222233331234", "description": "Brokerage account.", "label": [2]},
    "risk_tolerance": {"value": "very low", "description": "Risk appetite.", "label": [2]},
    "preferred_order_type": {"value": "limit order", "description": "Order type.", "label": [2, 3]},
    "recent_lab_results": {"value": {"LDL": 140, "HbA1c": 7.2}, "description": "Lab values.", "label": [2]},
}

# (case id, field, upstream text, form the detector must report)
CASES = [
    ("verbatim", "annual_income", "Income is 62000.", "number"),
    ("separators", "annual_income", "Income is 62,000 a year.", "number"),
    ("currency", "annual_income", "Income is $62 000.", "number"),
    ("decimals", "annual_income", "Income is 62000.00 EUR.", "number"),
    ("scaled", "annual_income", "Income is about 62k.", "scaled"),
    ("words", "annual_income", "Income is sixty-two thousand.", "words"),
    ("upper-case", "risk_tolerance", "RISK: VERY LOW.", "text"),
    ("extra-spaces", "risk_tolerance", "risk is very    low", "text"),
    ("line-split", "name", "The client is Alice\nKeller.", "text"),
    ("hyphen-split", "name", "The client is Alice Kel-\nler.", "text"),
    ("family-name-only", "name", "Ms Keller called.", "partial"),
    ("date-iso", "date_of_birth", "Born 1984-03-07.", "date"),
    ("date-prose", "date_of_birth", "Born on 7 March 1984.", "date"),
    ("date-us", "date_of_birth", "Born March 7, 1984.", "date"),
    ("id-grouped", "account_number", "Account 4111 2222 3333 1234.", "text"),
    ("id-last-four", "account_number", "Card ending in 1234.", "partial"),
    ("date-dotted", "date_of_birth", "Born 07.03.1984.", "date"),
    ("hyphen-joined", "risk_tolerance", "risk=very-low", "joined"),
    ("underscore-joined", "name", "user alice_keller", "joined"),
    ("base64", "name", "ref " + base64.b64encode(b"Alice Keller").decode(), "encoded"),
    ("hex", "annual_income", "blob " + b"income 62000".hex(), "encoded"),
    ("reversed", "name", "client: rellek ecila", "encoded"),
    ("structured-words", "recent_lab_results", "LDL one hundred forty", "partial"),
]

#: Forms the rule-based privacy agent does not remove (its redaction matches the stored value's own spelling,
#: tolerant of whitespace, hyphens and underscores between words, every number inside it and numeric dates in
#: any order; these shapes are none of those).  Dates in prose are removed only
#: because their day and year are numbers of the stored value (the month name stays).
NOT_STOPPED = {
    "scaled",
    "words",
    "hyphen-split",
    "family-name-only",
    "id-grouped",
    "id-last-four",
    "base64",
    "hex",
    "reversed",
    "structured-words",
}


def _run(upstream_text: str, privacy_agent: bool) -> tuple[str, DataFlowLedger]:
    terminal = EchoBackend()
    agents = [
        AgentSpec("risk_assessment", 2, "You assess risk.", ScriptedBackend(lambda m, t: upstream_text)),
        AgentSpec("transaction_execution", 3, "You execute.", terminal),
    ]
    pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(PROFILE)) if privacy_agent else None
    _, ledger = EPEOrchestrator(agents, pa).run(PROFILE, {"question": "Proceed?", "kind": "utility"})
    context = [d.text for d in ledger.deliveries if d.recipient == "transaction_execution" and d.channel == "context"]
    return context[0], ledger


def _terminal_report(ledger: DataFlowLedger):
    return measure_leakage([e for e in ledger.exposures() if e.recipient == "transaction_execution"])


@pytest.mark.parametrize("case,field,text,form", CASES, ids=[c[0] for c in CASES])
def test_detector_flags_each_form_without_privacy_agent(case, field, text, form):
    delivered, ledger = _run(text, privacy_agent=False)
    assert text.split()[-1].rstrip(".") in delivered  # the baseline forwards the message unchanged
    rep = _terminal_report(ledger)
    leaked = {f: forms for _, _, f, forms in rep.leaks}
    assert form in leaked.get(field, ()), (case, leaked)
    # only the intended field, and nothing the terminal may see counts as a leak
    assert "preferred_order_type" not in leaked


@pytest.mark.parametrize(
    "case,field,text,form",
    [
        pytest.param(*c, marks=pytest.mark.xfail(strict=True, reason=f"not stopped by the rule: {c[0]} ({c[3]})"))
        if c[0] in NOT_STOPPED
        else c
        for c in CASES
    ],
    ids=[c[0] for c in CASES],
)
def test_rule_based_privacy_agent_stops_the_forms_it_claims(case, field, text, form):
    delivered, ledger = _run(text, privacy_agent=True)
    rep = _terminal_report(ledger)
    assert field not in {f for _, _, f, _ in rep.leaks}, (case, delivered)


def test_permitted_value_survives_every_reformatting():
    for text in ("Use a LIMIT ORDER.", "use a limit\norder", "Limit order, please."):
        delivered, ledger = _run(text, privacy_agent=True)
        rep = _terminal_report(ledger)
        assert rep.leakage == 0.0 and rep.permitted_recall == 1.0, (text, delivered)
        assert "limit" in delivered.lower()


def test_value_split_over_two_upstream_agents_is_detected():
    terminal = EchoBackend()
    agents = [
        AgentSpec("a", 1, "A.", ScriptedBackend(lambda m, t: "the client is Alice")),
        AgentSpec("b", 2, "B.", ScriptedBackend(lambda m, t: "Keller, noted")),
        AgentSpec("transaction_execution", 3, "C.", terminal),
    ]
    prof = dict(PROFILE, name=dict(PROFILE["name"], label=[1, 2]))
    _, ledger = EPEOrchestrator(agents).run(prof, {"question": "q"})
    leaked = {f: forms for _, r, f, forms in ledger.report().leaks if r == "transaction_execution"}
    assert "text" in leaked["name"] and "partial" in leaked["name"]


def _split_run(privacy_agent: bool) -> DataFlowLedger:
    """Two upstream agents each carry one half of the account number ("41112222" + "33331234")."""
    agents = [
        AgentSpec("a", 1, "A.", ScriptedBackend(lambda m, t: "account starts 41112222")),
        AgentSpec("b", 2, "B.", ScriptedBackend(lambda m, t: "(continued) 33331234 ends it")),
        AgentSpec("transaction_execution", 3, "C.", EchoBackend()),
    ]
    pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(PROFILE)) if privacy_agent else None
    _, ledger = EPEOrchestrator(agents, pa).run(PROFILE, {"question": "q"})
    return ledger


def test_value_split_inside_a_word_over_two_upstream_agents_is_detected():
    ledger = _split_run(privacy_agent=False)
    leaked = {f: forms for _, r, f, forms in ledger.report().leaks if r == "transaction_execution"}
    assert "split" in leaked["account_number"]


@pytest.mark.xfail(strict=True, reason="not stopped by the rule: split (each piece alone is not the value)")
def test_rule_based_privacy_agent_stops_a_split_value():
    ledger = _split_run(privacy_agent=True)
    leaked = {f for _, r, f, _ in ledger.report().leaks if r == "transaction_execution"}
    assert "account_number" not in leaked


def test_paraphrase_needs_the_judge_and_is_reported_apart():
    text = "Between us, she cannot stomach any risk at all."
    delivered, ledger = _run(text, privacy_agent=True)
    assert delivered.endswith(text)  # the rule cannot see a paraphrase
    exposures = [e for e in ledger.exposures() if e.recipient == "transaction_execution"]
    assert measure_leakage(exposures).leakage == 0.0

    def judge(messages):
        prompt = messages[-1]["content"]
        return "yes" if "risk tolerance" in prompt and "stomach any risk" in prompt else "no"

    rep = measure_leakage(exposures, judge=judge)
    denied = [f for f in PROFILE if f != "user_id" and 3 not in PROFILE[f]["label"]]
    assert rep.leakage == 0.0 and rep.judge_leakage == pytest.approx(1 / len(denied))


def test_llm_rewriter_that_reformats_is_caught_by_the_detector_not_hidden():
    # A model rewriter that "obfuscates" 62000 as 62k, with the rule switched off: the metric must see it.
    pa = PrivacyEnhancingAgent(
        PrivacyPolicy.from_labels(PROFILE),
        rewrite_backend=lambda m: m[-1]["content"].replace("62,000", "62k"),
        redact_after_rewrite=False,
    )
    out = pa.sanitise("Income is 62,000.", PROFILE, AgentSpec("transaction_execution", 3, "", None))
    assert out == "Income is 62k."
    rep = measure_leakage([Exposure(0, "t", out, PROFILE, frozenset({"preferred_order_type"}))])
    assert rep.leaks == [(0, "t", "annual_income", ("scaled",))]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("born 07.03.1984, ok", "born <redacted>, ok"),
        ("born 03/07/1984", "born <redacted>"),
        ("born 1984.03.07", "born <redacted>"),
        ("born 07.03.1985", "born 07.03.1985"),  # another date stays
        ("ratio 07.03 today", "ratio 07.03 today"),  # a decimal is not a date
        ("risk=very-low; very_low; Very Low", "risk=<redacted>; <redacted>; <redacted>"),
    ],
)
def test_rule_redaction_of_dotted_dates_and_joined_values(text, expected):
    from hf_trust.agents import redact

    assert redact(text, ["1984-03-07", "very low"]) == expected
