"""EPEAgent: an embedded privacy-enhancing agent for multi-agent LLM systems (Shi et al., arXiv:2503.08175).

A trusted agent C_A sits between a user's profile store and the local agents, and between the agents
themselves: at the retrieval (RAG) stage each agent receives only the entries its role is labelled for
(whole entries, value and description), and at the context stage every intermediate answer is redacted
for its recipient before delivery.  A ledger records which field reached whom on which channel.

    from hf_trust.agents import AgentSpec, PrivacyPolicy, PrivacyEnhancingAgent, EPEOrchestrator, hf_chat_backend
    backend = hf_chat_backend(model, tokenizer)
    agents = [AgentSpec("market_data", 1, role_prompt, backend), ...]
    orch = EPEOrchestrator(agents, PrivacyEnhancingAgent(PrivacyPolicy.from_labels(profile)))
    answer, ledger = orch.run(user_profile, question)
"""

from .backends import ConstantBackend, EchoBackend, RecordingBackend, ScriptedBackend, hf_chat_backend, render
from .data import AGENT_ROLES, FIELDS, as_dataset, generate_profiles, generate_questions, make_agents, question_fields
from .metrics import find_answer_letter, leakage, permitted_recall, privacy_mcq, privacy_oeq, summarise, utility
from .orchestrator import PRIVACY_RULES, REFUSAL_SENTENCE, REFUSE_OPTION, EPEOrchestrator, EpisodeTrace, Question
from .policy import AgentSpec, ChatBackend, PrivacyPolicy
from .privacy_agent import PrivacyEnhancingAgent, deny_all
from .sanitise import REDACTED, contains_value, find_fields, redact, value_forms
from .tools import DataFlowLedger, LedgerEntry, make_profile_tool

__all__ = [
    "AGENT_ROLES",
    "FIELDS",
    "PRIVACY_RULES",
    "REDACTED",
    "REFUSAL_SENTENCE",
    "REFUSE_OPTION",
    "AgentSpec",
    "ChatBackend",
    "ConstantBackend",
    "DataFlowLedger",
    "EPEOrchestrator",
    "EchoBackend",
    "EpisodeTrace",
    "LedgerEntry",
    "PrivacyEnhancingAgent",
    "PrivacyPolicy",
    "Question",
    "RecordingBackend",
    "ScriptedBackend",
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
    "permitted_recall",
    "privacy_mcq",
    "privacy_oeq",
    "question_fields",
    "redact",
    "render",
    "summarise",
    "utility",
    "value_forms",
]
