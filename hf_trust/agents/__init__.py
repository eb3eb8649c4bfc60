"""EPEAgent: an embedded privacy-enhancing agent for multi-agent LLM systems (Shi et al., arXiv:2503.08175).

A trusted agent C_A sits between a user's profile store and the local agents, and between the agents
themselves: at the retrieval (RAG) stage each agent receives only the entries its role is labelled for
(whole entries, value and description), and at the context stage every intermediate answer is rewritten for
its recipient before delivery, by a deterministic redaction, by a chat model (optionally trained with TRL,
:mod:`hf_trust.agents.training`), or both.  A ledger keeps every delivered text, and an independent
value-level detector (:mod:`hf_trust.agents.leakage`) measures which field reached whom;
:func:`to_agentleak` exports the same runs to AgentLeak, an independent scanner.

The privacy agent is reconstructed (no released code): the released EPEAgent code cannot run (it imports
modules absent from its repository) and its privacy agent was never released, so this one follows the paper's
description.  One routing difference is an option: privacy questions go to the labelled agent here (as the
paper describes) and to the final agent in the released runner (``EPEOrchestrator(privacy_responder="final")``).

    from hf_trust.agents import AgentSpec, PrivacyPolicy, PrivacyEnhancingAgent, EPEOrchestrator, hf_chat_backend
    backend = hf_chat_backend(model, tokenizer)
    agents = [AgentSpec("market_data", 1, role_prompt, backend), ...]
    orch = EPEOrchestrator(agents, PrivacyEnhancingAgent(PrivacyPolicy.from_labels(profile)))
    answer, ledger = orch.run(user_profile, question)
    ledger.report().leakage, ledger.report().permitted_recall
"""

from typing import Any

from .backends import hf_chat_backend, render
from .data import AGENT_ROLES, FIELDS, as_dataset, generate_profiles, generate_questions, make_agents, question_fields
from .export import to_agentleak
from .leakage import LeakageDetector, LeakageReport, measure_leakage
from .metrics import find_answer_letter, leakage, permitted_recall, privacy_mcq, privacy_oeq, summarise, utility
from .orchestrator import PRIVACY_RULES, REFUSAL_SENTENCE, REFUSE_OPTION, EPEOrchestrator, EpisodeTrace, Question
from .policy import AgentSpec, ChatBackend, PrivacyPolicy
from .privacy_agent import PrivacyEnhancingAgent, deny_all, rewrite_messages
from .sanitise import REDACTED, contains_value, find_fields, redact, value_forms
from .tools import DataFlowLedger, LedgerEntry, make_profile_tool

# The TRL training API imports trl; load it on first use so `import hf_trust.agents` stays light.
_LAZY = {
    "PrivacyAgentConfig": "training",
    "train_privacy_agent": "training",
    "rewrite_examples": "training",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGENT_ROLES",
    "FIELDS",
    "PRIVACY_RULES",
    "REDACTED",
    "REFUSAL_SENTENCE",
    "REFUSE_OPTION",
    "AgentSpec",
    "ChatBackend",
    "DataFlowLedger",
    "EPEOrchestrator",
    "EpisodeTrace",
    "LeakageDetector",
    "LeakageReport",
    "LedgerEntry",
    "PrivacyAgentConfig",
    "PrivacyEnhancingAgent",
    "PrivacyPolicy",
    "Question",
    "as_dataset",
    "contains_value",
    "deny_all",
    "find_answer_letter",
    "find_fields",
    "generate_profiles",
    "generate_questions",
    "hf_chat_backend",
    "leakage",
    "make_agents",
    "make_profile_tool",
    "measure_leakage",
    "permitted_recall",
    "privacy_mcq",
    "privacy_oeq",
    "question_fields",
    "redact",
    "render",
    "rewrite_examples",
    "rewrite_messages",
    "summarise",
    "to_agentleak",
    "train_privacy_agent",
    "utility",
    "value_forms",
]
