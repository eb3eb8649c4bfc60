"""EPEAgent: the spec's fake-exposing measurements, on scripted backends and tiny models."""

from __future__ import annotations

import json
import re

import pytest
import torch

from hf_trust.agents import (
    REDACTED,
    REFUSAL_SENTENCE,
    AgentSpec,
    DataFlowLedger,
    EPEOrchestrator,
    EpisodeTrace,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    Question,
    contains_value,
    find_answer_letter,
    generate_profiles,
    generate_questions,
    hf_chat_backend,
    leakage,
    make_agents,
    make_profile_tool,
    permitted_recall,
    privacy_mcq,
    privacy_oeq,
    utility,
)
from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustError, HFTrustTypeError

from .scripted import ConstantBackend, EchoBackend, ScriptedBackend


def _by_id(profiles):
    return {p["user_id"]: p for p in profiles}


def _run_all(orch, profiles, questions):
    ledger, answers = DataFlowLedger(), []
    users = _by_id(profiles)
    for q in questions:
        ans, _ = orch.run(users[q["user_id"]], q, ledger=ledger)
        answers.append(ans)
    return answers, ledger


@pytest.fixture(params=["financial", "medical"])
def domain_setup(request):
    domain = request.param
    profiles = generate_profiles(domain, n_users=6, seed=1)
    questions = generate_questions(profiles, domain, n_per_field=2, seed=1)
    return domain, profiles, questions, PrivacyPolicy.from_labels(profiles[0])


# ---------------------------------------------------------------- 1 + 2 + 3: leakage, recall, transitivity
def test_canary_leakage_zero_on_every_prompt_and_recall_one(domain_setup):
    domain, profiles, questions, policy = domain_setup
    echo = EchoBackend()
    agents = make_agents(domain, echo)
    answers, ledger = _run_all(EPEOrchestrator(agents, PrivacyEnhancingAgent(policy)), profiles, questions)
    assert leakage(ledger) == 0.0
    assert permitted_recall(ledger) == 1.0
    # Independent check on the raw strings each backbone was handed (not the ledger's own bookkeeping).
    assert len(echo.prompts) > 0
    names = {a.name: a.label_id for a in agents}
    i = 0
    for prompt in echo.prompts:
        lid = next(
            lid
            for n, lid in names.items()
            if prompt.startswith(f"system: {next(a.role_prompt for a in agents if a.name == n)}")
        )
        for prof in profiles:
            for f, e in prof.items():
                if f != "user_id" and e["canary"] in prompt:
                    assert lid in e["label"], f"canary of {f} reached agent {lid}"
                    i += 1
    assert i > 0


def test_baseline_leaks_through_the_same_measurement(domain_setup):
    domain, profiles, questions, policy = domain_setup
    answers, ledger = _run_all(EPEOrchestrator(make_agents(domain, EchoBackend())), profiles, questions)
    assert leakage(ledger) == 1.0
    assert permitted_recall(ledger) == 1.0


class RedactEverything(PrivacyEnhancingAgent):
    """A toy filter that passes the leakage check by delivering nothing."""

    def minimise(self, record, recipient, extra=frozenset()):
        return {}

    def sanitise(self, text, source_record, recipient, extra=frozenset()):
        return ""


def test_redact_everything_filter_fails_recall(domain_setup):
    domain, profiles, questions, policy = domain_setup
    _, ledger = _run_all(
        EPEOrchestrator(make_agents(domain, EchoBackend()), RedactEverything(policy)), profiles, questions
    )
    assert leakage(ledger) == 0.0
    assert permitted_recall(ledger) == 0.0


def test_no_transitive_leak_through_echoing_intermediate_agent():
    profiles = generate_profiles("financial", n_users=1, seed=3)
    prof = profiles[0]
    policy = PrivacyPolicy.from_labels(prof)
    terminal_backend = EchoBackend()
    agents = make_agents("financial", EchoBackend())
    agents[2].backbone = terminal_backend
    trace = EpisodeTrace()
    orch = EPEOrchestrator(agents, PrivacyEnhancingAgent(policy))
    _, ledger = orch.run(prof, {"question": "Summarise the user.", "kind": "utility"}, trace=trace)
    # risk_assessment (2) saw annual_income and echoed it; transaction_execution (3) must not receive it.
    assert prof["annual_income"]["canary"] in trace.outputs["risk_assessment"]
    terminal_prompt = terminal_backend.prompts[-1]
    for f, e in prof.items():
        if f == "user_id":
            continue
        if 3 in e["label"]:
            assert e["canary"] in terminal_prompt, f
        else:
            assert e["canary"] not in terminal_prompt, f
            assert not contains_value(terminal_prompt, e["value"]), f
    assert REDACTED in terminal_prompt
    assert not ledger.violations()


# ---------------------------------------------------------------- 4: description channel, number formats
def test_prose_numbers_do_not_leak():
    prof = {
        "annual_income": {"value": 62000, "description": "Her annual income is 62,000, paid monthly.", "label": [2]},
        "preferred_order_type": {"value": "limit order", "description": "Prefers limit orders.", "label": [3]},
    }
    pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof))
    terminal = AgentSpec("exec", 3, "", ConstantBackend("x"))
    msg = "Income 62,000 (i.e. 62000, or 62 000 or 62000.0); she uses a limit order. Her annual income is 62,000, paid monthly."
    out = pa.sanitise(msg, prof, terminal)
    for form in ("62,000", "62000", "62 000", "62000.0"):
        assert form not in out
    assert "limit order" in out
    assert not contains_value(out, 62000)
    assert pa.minimise(prof, terminal) == {
        "preferred_order_type": {"value": "limit order", "description": "Prefers limit orders."}
    }


def test_sanitise_list_items_and_nested_leaves():
    prof = {
        "tx": {"value": [{"asset": "ETF", "amount": 14500}, {"asset": "bond", "amount": 3000}], "label": [2]},
        "labs": {"value": {"LDL": 187, "HbA1c": 7.2}, "label": [4]},
    }
    pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof))
    out = pa.sanitise(
        "bought ETF for 14,500 and a bond for 3000; LDL 187, HbA1c 7.2; 1450 other",
        prof,
        AgentSpec("x", 9, "", ConstantBackend("")),
    )
    assert (
        out
        == f"bought {REDACTED} for {REDACTED} and a {REDACTED} for {REDACTED}; LDL {REDACTED}, HbA1c {REDACTED}; 1450 other"
    )


def test_llm_rewrite_is_followed_by_deterministic_pass():
    prof = generate_profiles("medical", n_users=1, seed=0)[0]
    policy = PrivacyPolicy.from_labels(prof)
    leaky_rewriter = EchoBackend()  # a C_A backbone that ignores its instructions
    pa = PrivacyEnhancingAgent(policy, rewrite_backend=leaky_rewriter)
    target = AgentSpec("medication_management", 6, "", ConstantBackend(""))
    text = json.dumps(prof)
    out = pa.sanitise(text, prof, target)
    assert len(leaky_rewriter.prompts) == 1 and "recent_lab_results" in leaky_rewriter.prompts[0]
    for f, e in prof.items():
        if f != "user_id" and 6 not in e["label"]:
            assert e["canary"] not in out
    assert prof["allergies"]["canary"] in out


# ---------------------------------------------------------------- 5: routing and scoring
def test_privacy_questions_routed_to_labelled_agent():
    profiles = generate_profiles("financial", n_users=3, seed=0)
    questions = [q for q in generate_questions(profiles, "financial", n_per_field=1) if q["kind"] == "privacy"]
    backends = {i: ScriptedBackend(lambda m, t, i=i: f"agent{i}") for i in (1, 2, 3)}
    agents = [
        AgentSpec(n, i, r, backends[i])
        for n, i, r in [("market_data", 1, "a"), ("risk_assessment", 2, "b"), ("transaction_execution", 3, "c")]
    ]
    orch = EPEOrchestrator(agents, PrivacyEnhancingAgent(PrivacyPolicy.from_labels(profiles[0])))
    users = _by_id(profiles)
    for q in questions:
        ans, _ = orch.run(users[q["user_id"]], q)
        assert ans == f"agent{q['label']}"
    with pytest.raises(HFTrustError, match="label_id"):
        orch.run(profiles[0], {"question": "x", "kind": "privacy", "label": 7})


def test_always_refusing_backbone_scores_privacy_one_and_chance_utility():
    profiles = generate_profiles("medical", n_users=25, seed=0)
    questions = generate_questions(profiles, "medical", n_per_field=5, seed=0)

    def refuse(messages, tools):
        return "(d)" if "(d)" in messages[-1]["content"] else REFUSAL_SENTENCE

    agents = make_agents("medical", ScriptedBackend(refuse))
    answers, _ = _run_all(
        EPEOrchestrator(agents, PrivacyEnhancingAgent(PrivacyPolicy.from_labels(profiles[0]))), profiles, questions
    )
    assert privacy_mcq(answers, questions) == 1.0
    assert privacy_oeq(answers, questions) == 1.0
    gold_d = sum(q["answer"] == "d" for q in questions if q["kind"] == "utility") / 30
    assert utility(answers, questions) == pytest.approx(gold_d)
    assert 0.1 < utility(answers, questions) < 0.45  # chance level on 4 options


def test_answer_letter_is_the_last_one_and_oeq_is_exact():
    assert find_answer_letter("I think (a), no wait, (C).") == "c"
    assert find_answer_letter("no letter") is None
    qs = [{"kind": "privacy", "format": "oeq", "answer": REFUSAL_SENTENCE}] * 2
    assert privacy_oeq([REFUSAL_SENTENCE.upper() + "  ", "I refuse."], qs) == 0.5
    with pytest.raises(HFTrustError, match="one answer per question"):
        utility(["(a)"], qs)


# ---------------------------------------------------------------- 6: dynamic topology
def test_fourth_agent_needs_only_policy_data():
    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    prof = {
        k: (dict(v, label=v["label"] + [7]) if k in ("risk_tolerance", "name") else v) if k != "user_id" else v
        for k, v in prof.items()
    }
    auditor = EchoBackend()
    agents = make_agents("financial", EchoBackend()) + [AgentSpec("compliance", 7, "You audit.", auditor)]
    topology = {
        "market_data": [],
        "risk_assessment": [],
        "compliance": ["risk_assessment"],
        "transaction_execution": ["market_data", "risk_assessment", "compliance"],
    }
    policy = PrivacyPolicy.from_labels(prof)
    orch = EPEOrchestrator(agents, PrivacyEnhancingAgent(policy), topology=topology)
    assert orch.terminal == "transaction_execution"
    _, ledger = orch.run(prof, {"question": "q", "kind": "utility"})
    assert ledger.fields_seen("compliance") == {"risk_tolerance", "name"}
    assert leakage(ledger) == 0.0 and permitted_recall(ledger) == 1.0
    with pytest.raises(HFTrustError, match="cycle"):
        EPEOrchestrator(agents, topology={"market_data": ["compliance"], "compliance": ["market_data"]})


# ---------------------------------------------------------------- 7: permission elevation
def test_denied_elevation_delivers_nothing_and_granted_delivers_field():
    prof = generate_profiles("medical", n_users=1, seed=0)[0]
    policy = PrivacyPolicy.from_labels(prof)
    calls = []

    def ask(agent, field):
        calls.append((agent, field))
        return grant

    q = {"question": "Which lab result?", "kind": "privacy", "label": 6, "field": "recent_lab_results"}
    for grant in (False, True):
        calls.clear()
        be = EchoBackend()
        orch = EPEOrchestrator(make_agents("medical", be), PrivacyEnhancingAgent(policy, request_permission=ask))
        _, ledger = orch.run(prof, q)
        assert calls == [("medication_management", "recent_lab_results")]
        delivered = prof["recent_lab_results"]["canary"] in be.prompts[-1]
        assert delivered is grant
        assert ("recent_lab_results" in ledger.fields_seen("medication_management")) is grant
        assert not ledger.violations()
    # default callback denies
    orch = EPEOrchestrator(make_agents("medical", EchoBackend()), PrivacyEnhancingAgent(policy))
    _, ledger = orch.run(prof, q)
    assert "recent_lab_results" not in ledger.fields_seen("medication_management")
    assert orch.privacy_agent.elevations == [
        {"agent": "medication_management", "field": "recent_lab_results", "granted": False}
    ]


# ---------------------------------------------------------------- tools, memory, policy persistence
def test_retrieval_tool_is_intercepted_and_schema_unchanged():
    from transformers.utils import get_json_schema

    profiles = generate_profiles("financial", n_users=2, seed=0)
    tool = make_profile_tool(_by_id(profiles))
    prof = profiles[1]
    policy = PrivacyPolicy.from_labels(prof)
    be = EchoBackend(tool_args={"user_id": prof["user_id"]})
    orch = EPEOrchestrator(make_agents("financial", be), PrivacyEnhancingAgent(policy), rag="tool", retrieval_tool=tool)
    agent = orch.agents["market_data"]
    assert get_json_schema(orch.privacy_agent.wrap_tool(tool, agent)) == get_json_schema(tool)
    _, ledger = orch.run(prof, {"question": "q"})
    assert {e.channel for e in ledger.entries} >= {"tool"}
    assert ledger.fields_seen("market_data") == set(policy.fields_for(1))
    assert leakage(ledger) == 0.0 and permitted_recall(ledger) == 1.0


def test_memory_persistence_goes_through_the_choke_point(tmp_path):
    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    policy = PrivacyPolicy.from_labels(prof)
    agents = make_agents("financial", EchoBackend())
    orch = EPEOrchestrator(agents, PrivacyEnhancingAgent(policy), persist_memory=True)
    _, ledger = orch.run(prof, {"question": "q"})
    mem = agents[2].memory[-1]["content"]
    assert prof["risk_tolerance"]["canary"] not in mem and prof["preferred_order_type"]["canary"] in mem
    assert not ledger.violations()
    ledger.to_jsonl(tmp_path / "ledger.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert len(rows) == len(ledger) and set(rows[0]) == {
        "recipient",
        "label_id",
        "field",
        "channel",
        "allowed",
        "episode",
        "forms",
        "sender",
    }


def test_every_delivery_records_its_sender():
    """Retrieval comes from the profile store, the question from the user, each context message from its
    upstream agent (checked against the agent named in the message itself)."""
    prof = generate_profiles("medical", n_users=1, seed=3)[0]
    for pa in (None, PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof))):
        orch = EPEOrchestrator(make_agents("medical", EchoBackend()), pa, persist_memory=True)
        _, ledger = orch.run(prof, {"question": "q"})
        seen = set()
        for d in ledger.deliveries:
            if d.channel == "context":
                named = re.match(r"Intermediate answer from the (\w+) agent", d.text).group(1)
                assert d.sender == named and d.sender != d.recipient
            else:
                expected = {"rag": "profile_store", "question": "user", "memory": d.recipient}[d.channel]
                assert d.sender == expected, d
            seen.add(d.channel)
        assert seen == {"rag", "context", "question", "memory"}
        senders = {(e.recipient, e.sender) for e in ledger.entries if e.channel == "context"}
        assert ("medication_management", "diagnosis") in senders


def test_llm_labeller_policy_is_cached_and_auditable(tmp_path):
    agents = make_agents("financial", None)
    fields = {"risk_tolerance": "risk", "preferred_order_type": "orders"}

    def labeller(messages, tools=None):
        text = messages[-1]["content"]
        return (
            "yes"
            if ("Risk" in text and "risk_tolerance" in text)
            or ("Transaction" in text and "preferred_order_type" in text)
            else "no"
        )

    p1 = PrivacyPolicy.from_llm(agents, fields, labeller, cache_path=tmp_path / "policy.json", labeller_id="rule-v1")
    assert p1.allowed == {"risk_tolerance": frozenset({2}), "preferred_order_type": frozenset({3})}
    assert len(p1.audit_log) == 6
    p2 = PrivacyPolicy.from_llm(
        agents,
        fields,
        lambda m: pytest.fail("cache not used"),
        cache_path=tmp_path / "policy.json",
        labeller_id="rule-v1",
    )
    assert p2 == p1 and p2.source == "llm"


# ---------------------------------------------------------------- errors
def test_clear_errors():
    # Each refusal is an hf-trust error of the fitting kind (data, config, type), naming what to pass instead.
    with pytest.raises(HFTrustDataError, match="label"):
        PrivacyPolicy.from_labels({"age": {"value": 3}})
    with pytest.raises(HFTrustConfigError, match="unique"):
        EPEOrchestrator([AgentSpec("a", 1, "", ConstantBackend("")), AgentSpec("a", 2, "", ConstantBackend(""))])
    with pytest.raises(HFTrustConfigError, match="backbone; pass a chat backend"):
        EPEOrchestrator([AgentSpec("a", 1, "")])
    with pytest.raises(HFTrustConfigError, match="unknown agents"):
        EPEOrchestrator([AgentSpec("a", 1, "", ConstantBackend(""))], topology={"a": ["b"]})
    with pytest.raises(HFTrustTypeError, match="PrivacyPolicy.*PrivacyPolicy.from_labels"):
        PrivacyEnhancingAgent({"age": [1]})
    with pytest.raises(HFTrustTypeError, match="label_id must be an int"):
        AgentSpec("a", "1", "")
    with pytest.raises(HFTrustConfigError, match="domain"):
        generate_profiles("legal")
    with pytest.raises(HFTrustDataError, match="generate_profiles"):
        generate_questions([], "financial")
    with pytest.raises(HFTrustTypeError, match="Cannot read a question from int"):
        Question.coerce(3)
    with pytest.raises(HFTrustConfigError, match="retrieval_tool"):
        EPEOrchestrator([AgentSpec("a", 1, "", ConstantBackend(""))], rag="tool")


def test_data_generator_format():
    profiles = generate_profiles("financial", n_users=25, seed=0)
    assert len(profiles) == 25 and all(len(p) == 12 for p in profiles)
    assert all(
        set(e) == {"value", "description", "label", "canary"} for p in profiles for k, e in p.items() if k != "user_id"
    )
    assert profiles[0]["annual_income"]["label"] == [2] and profiles[0]["transaction_history"]["label"] == [2, 3]
    qs = generate_questions(profiles, "financial", n_per_field=5)
    assert sum(q["kind"] == "utility" for q in qs) == 30
    assert all(
        q["options"][-1] == "Refuse to answer" and q["answer"] == "d"
        for q in qs
        if q["format"] == "mcq" and q["kind"] == "privacy"
    )
    assert all(q["label"] not in profiles[0][q["field"]]["label"] for q in qs if q["kind"] == "privacy")
    assert generate_profiles("medical", 2, seed=5) == generate_profiles("medical", 2, seed=5)


# ---------------------------------------------------------------- HF chat backend
def _offline_chat_tokenizer():
    import trl
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen3_chat_template

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<|endoftext|>"]
    tr = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(['user profile {"name": "retrieve_user_profile", "arguments": {"user_id": "u"}}'] * 5, tr)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    tok.chat_template = qwen3_chat_template
    return trl.add_response_schema(tok)


class _CannedLM:
    """Stands in for a causal LM: returns canned replies in turn, records prompts."""

    device = torch.device("cpu")

    def __init__(self, tok, replies):
        self.tok, self.replies, self.prompts = tok, list(replies), []

    def generate(self, input_ids, attention_mask=None, **kw):
        self.prompts.append(self.tok.decode(input_ids[0]))
        new = self.tok(self.replies.pop(0), return_tensors="pt", add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, new], dim=1)


_HAS_PARSE_RESPONSE = hasattr(__import__("transformers").PreTrainedTokenizerBase, "parse_response")


@pytest.mark.skipif(not _HAS_PARSE_RESPONSE, reason="transformers < 5 cannot parse tool calls; see the next test")
def test_hf_backend_parses_tool_calls_and_feeds_minimised_result():
    tok = _offline_chat_tokenizer()
    profiles = generate_profiles("financial", n_users=1, seed=0)
    prof = profiles[0]
    call = '<tool_call>\n{{"name": "retrieve_user_profile", "arguments": {{"user_id": "{}"}}}}\n</tool_call>'.format(
        prof["user_id"]
    )
    lm = _CannedLM(tok, [call, "(b)"])
    backend = hf_chat_backend(lm, tok, max_new_tokens=8)
    agent = AgentSpec("market_data", 1, "role", backend)
    policy = PrivacyPolicy.from_labels(prof)
    tool = make_profile_tool(_by_id(profiles))
    ledger = DataFlowLedger()
    wrapped = PrivacyEnhancingAgent(policy).wrap_tool(tool, agent, ledger, prof)
    out = backend([{"role": "user", "content": "which?"}], tools=[wrapped])
    assert out == "(b)"
    assert "retrieve_user_profile" in lm.prompts[0]  # schema rendered by the chat template
    second = lm.prompts[1]
    assert prof["market_monitoring_frequency"]["canary"] in second and prof["risk_tolerance"]["canary"] not in second
    assert ledger.fields_seen("market_data") == set(policy.fields_for(1))


def test_hf_backend_with_tiny_random_model_runs_episode():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = _offline_chat_tokenizer()
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=4096,
        )
    ).eval()
    backend = hf_chat_backend(model, tok, max_new_tokens=4)
    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    policy = PrivacyPolicy.from_labels(prof)
    orch = EPEOrchestrator(make_agents("financial", backend), PrivacyEnhancingAgent(policy))
    ans, ledger = orch.run(prof, Question("Which?", ["x", "y", "z", "Refuse to answer"]))
    assert isinstance(ans, str)
    assert leakage(ledger) == 0.0 and permitted_recall(ledger) == 1.0
    with pytest.raises(HFTrustError, match="chat_template"):
        tok.chat_template = None
        hf_chat_backend(model, tok)


# ---------------------------------------------------------------- second data source: the official field structure
@pytest.mark.parametrize("domain", ["financial", "medical"])
def test_official_structure_profiles_and_leakage(domain):
    import re

    from hf_trust.agents.data import OFFICIAL_ORDER

    profiles = generate_profiles(domain, n_users=8, seed=2, structure="official")
    assert [f for f in profiles[0] if f != "user_id"] == OFFICIAL_ORDER[domain]
    p = profiles[0]
    if domain == "financial":
        assert isinstance(p["investment_goals"]["value"], list) and isinstance(p["time_horizon"]["value"], int)
        assert all(re.fullmatch(r"2024-\d\d-\d\d", t["date"]) for t in p["transaction_history"]["value"])
    else:
        assert set(p["recent_lab_results"]["value"]) == {"ldl", "blood_pressure"}
        assert all(set(m) == {"name", "dosage"} for m in p["current_medications"]["value"])
        assert any(q["allergies"]["value"] == [] for q in profiles)  # empty lists exist, as in the release
    for q in profiles:  # descriptions never restate the value (unlike the generated structure)
        for f in q:
            if f != "user_id":
                assert str(q[f]["value"]) not in q[f]["description"].replace(q[f]["canary"], "")
    ledgers = {}
    for pa_on in (False, True):
        ledger = DataFlowLedger()
        for q in profiles:
            pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(q)) if pa_on else None
            EPEOrchestrator(make_agents(domain, EchoBackend()), pa).run(q, {"question": "Summarise."}, ledger=ledger)
        ledgers[pa_on] = ledger.report()
    assert ledgers[False].canary_leakage == 1.0 and ledgers[True].canary_leakage == 0.0
    assert ledgers[False].permitted_recall == ledgers[True].permitted_recall == 1.0
    # value level: the echo baseline leaks every denied field that has a non-empty value
    assert ledgers[False].leakage > 0.85 and ledgers[True].leakage < 0.02
    with pytest.raises(HFTrustError, match="structure"):
        generate_profiles(domain, 1, structure="release")


def test_privacy_responder_labelled_or_final():
    """The paper asks the labelled agent; the released runner asks the final agent: both are offered."""
    prof = generate_profiles("financial", n_users=1, seed=0)[0]
    q = {"question": "What is the user's risk tolerance?", "kind": "privacy", "label": 2, "field": "risk_tolerance"}
    for mode, responder in (("labelled", "risk_assessment"), ("final", "transaction_execution")):
        orch = EPEOrchestrator(make_agents("financial", EchoBackend()), privacy_responder=mode)
        trace = EpisodeTrace()
        orch.run(prof, q, trace=trace)
        assert trace.responder == responder
        assert set(trace.outputs) == ({"risk_assessment"} if mode == "labelled" else set(orch.order))
    with pytest.raises(HFTrustError, match="privacy_responder"):
        EPEOrchestrator(make_agents("financial", EchoBackend()), privacy_responder="last")


def test_study_runs_reformatting_upstream_agents_as_a_standard_condition():
    """Deterministic scripted agents: the rule stops the summarisers' values but not all reformatted ones."""
    from hf_trust.demo.studies.epeagent import eval_questions, run_arm

    profiles, questions = eval_questions("medical", 0, 10, 6, 2)
    rule = {
        up: run_arm("medical", profiles, questions, PrivacyEnhancingAgent, 0, up)
        for up in ("summarising", "reformatting")
    }
    none = run_arm("medical", profiles, questions, None, 0, "reformatting")
    assert none["context_leakage"] == 1.0
    assert rule["summarising"]["context_leakage"] == 0.0
    assert rule["reformatting"]["context_leakage"] > 0.1  # encoded, reversed, split and spelt-out copies pass
    with pytest.raises(HFTrustError, match="upstream"):
        run_arm("medical", profiles, questions, None, 0, "paraphrasing")


def test_hf_backend_with_tools_on_a_transformers_without_parse_response_names_the_fix():
    """transformers 4.x has no tokenizer.parse_response: offering tools is a clear error, not raw tool-call text
    returned as the answer."""
    real = _offline_chat_tokenizer()

    class OldTokenizer:  # the tokenizer as transformers 4.x has it: everything but parse_response
        def __call__(self, *args, **kwargs):
            return real(*args, **kwargs)

        def __getattr__(self, name):
            if name == "parse_response":
                raise AttributeError(name)
            return getattr(real, name)

    tok = OldTokenizer()
    backend = hf_chat_backend(_CannedLM(real, ["(b)"]), tok)

    def retrieve_user_profile(user_id: str) -> str:
        """Look up a user.

        Args:
            user_id: the user
        """
        return "{}"

    with pytest.raises(HFTrustError, match="parse_response.*rag='context'"):
        backend([{"role": "user", "content": "hi"}], tools=[retrieve_user_profile])
