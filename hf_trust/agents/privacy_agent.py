"""C_A, the embedded privacy-enhancing agent: the single choke point for every flow of user data.

Paper steps 2 (RAG-stage minimisation, Eq. 5), 4 (context-stage "reasoning-progress" minimisation) and
6 (dynamic permission elevation).  Memory and log persistence go through :meth:`persist`, the same path.

Reconstructed (no released code): the paper's privacy agent was never released and the released EPEAgent code
cannot run (it imports modules absent from its repository); this agent follows the paper's description.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, Optional

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustTypeError

from .policy import AgentSpec, ChatBackend, PrivacyPolicy
from .sanitise import REDACTED, redact
from .tools.ledger import DataFlowLedger

PermissionCallback = Callable[[str, str], bool]

REWRITE_PROMPT = (
    "Rewrite this message for the {recipient} agent. Delete every sentence about the user's {denied}. "
    "Keep every other sentence word for word. Reply with the rewritten message only."
)


def rewrite_messages(text: str, recipient: str, denied: list[str]) -> list[dict]:
    """The chat a rewrite model is given: the instruction (recipient and the fields it may not see) and the message.

    The same function builds the training prompts (:mod:`hf_trust.agents.training`) and the inference prompts,
    so a trained rewriter sees at run time exactly the format it was trained on.  Only the denied fields are
    listed: that is what the rewrite acts on, and a short prompt keeps small rewriters fast.
    """
    names = ", ".join(f.replace("_", " ") for f in denied)
    system = REWRITE_PROMPT.format(recipient=recipient.replace("_", " "), denied=names)
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def deny_all(agent: str, field: str) -> bool:
    """Default elevation callback: nothing outside the policy is granted."""
    return False


class PrivacyEnhancingAgent:
    """The trusted server-side privacy agent C_A, reconstructed (no released code) from the paper.

    Args:
        policy: who may see which field.
        rewrite_backend: optional chat model for the context stage (the paper's ``epe_agent`` call): it rewrites
            each intermediate answer to what the recipient may see (see :func:`rewrite_messages`; a model trained
            for it comes from :func:`hf_trust.agents.training.train_privacy_agent`).
        redact_after_rewrite: run the deterministic redaction after the model's rewrite (default).  Defence in
            depth, because a weak C_A backbone is the largest privacy loss the paper reports (Gemini-1.5 as C_A:
            -39 points); set ``False`` to measure the model on its own.
        request_permission: ``callback(agent_name, field) -> bool`` asked when an agent needs a field the policy
            does not give it; a trusted third party asks the user.  Defaults to deny.
        strip_labels: drop the ``label`` metadata from minimised entries (it is policy, not user data).
    """

    def __init__(
        self,
        policy: PrivacyPolicy,
        rewrite_backend: Optional[ChatBackend] = None,
        request_permission: PermissionCallback = deny_all,
        strip_labels: bool = True,
        redact_after_rewrite: bool = True,
    ) -> None:
        if not isinstance(policy, PrivacyPolicy):
            raise HFTrustTypeError(
                f"PrivacyEnhancingAgent needs a PrivacyPolicy, got {type(policy).__name__}; "
                "build one with PrivacyPolicy.from_labels(profile)."
            )
        self.policy = policy
        self.rewrite_backend = rewrite_backend
        self.request_permission = request_permission
        self.strip_labels = strip_labels
        if not redact_after_rewrite and rewrite_backend is None:
            raise HFTrustConfigError(
                "redact_after_rewrite=False without a rewrite_backend would deliver messages unfiltered; "
                "pass rewrite_backend=<chat model> or keep redact_after_rewrite=True."
            )
        self.redact_after_rewrite = redact_after_rewrite
        self.elevations: list[dict] = []

    # ---------------------------------------------------------------- step 2: RAG stage
    def minimise(self, record: Mapping[str, Any], recipient: AgentSpec, extra: frozenset = frozenset()) -> dict:
        """``M_min^u(i)``: the entries whose label contains the recipient, whole (value and description together).

        ``extra`` holds fields granted by elevation for this episode.
        """
        out = {}
        for fname, entry in record.items():
            if fname == "user_id":
                continue
            if self.policy.is_allowed(fname, recipient.label_id) or fname in extra:
                if isinstance(entry, Mapping) and self.strip_labels:
                    entry = {k: v for k, v in entry.items() if k not in ("label", "canary")}
                out[fname] = entry
        return out

    def wrap_tool(
        self,
        tool: Callable[..., str],
        recipient: AgentSpec,
        ledger: Optional[DataFlowLedger] = None,
        record: Optional[Mapping[str, Any]] = None,
    ) -> Callable[..., str]:
        """Intercept a retrieval tool: its JSON result is minimised for ``recipient`` before the agent sees it.

        The wrapper keeps the tool's name, signature and docstring, so its chat-template schema is unchanged.
        """

        @functools.wraps(tool)
        def wrapped(*args: Any, **kwargs: Any) -> str:
            raw = tool(*args, **kwargs)
            try:
                data = json.loads(raw) if isinstance(raw, str) else raw
            except json.JSONDecodeError as exc:
                raise HFTrustDataError(
                    f"Tool {tool.__name__!r} must return a JSON profile for the privacy agent to "
                    "minimise; got free text."
                ) from exc
            text = json.dumps(self.minimise(data, recipient), ensure_ascii=False)
            if ledger is not None:
                ledger.record(
                    recipient.name,
                    recipient.label_id,
                    "tool",
                    text,
                    record or data,
                    lambda f: self.policy.is_allowed(f, recipient.label_id),
                )
            return text

        return wrapped

    # ---------------------------------------------------------------- step 4: context stage
    def private_values(self, record: Mapping[str, Any], recipient: AgentSpec, extra: frozenset = frozenset()) -> list:
        """Every value, description and canary of the fields the recipient may not see.

        The whole description is listed too, so an echoed description disappears in one piece rather than
        leaving its prose around the redacted value.
        """
        vals = []
        for fname, entry in record.items():
            if fname == "user_id" or self.policy.is_allowed(fname, recipient.label_id) or fname in extra:
                continue
            if isinstance(entry, Mapping):
                vals.extend(entry.get(k) for k in ("description", "value", "canary") if entry.get(k) is not None)
            else:
                vals.append(entry)
        return vals

    def sanitise(
        self, text: str, source_record: Mapping[str, Any], recipient: AgentSpec, extra: frozenset = frozenset()
    ) -> str:
        """Remove non-permitted content from an inter-agent message before ``recipient`` receives it."""
        if self.rewrite_backend is not None:
            fields = [f for f in source_record if f != "user_id"]
            denied = [f for f in fields if not self.policy.is_allowed(f, recipient.label_id) and f not in extra]
            if denied:
                rewritten = self.rewrite_backend(rewrite_messages(text, recipient.name, denied))
                if not isinstance(rewritten, str):
                    raise HFTrustTypeError(
                        f"The privacy agent's rewrite_backend returned {rewritten!r} ({type(rewritten).__name__}) "
                        f"for a message to the {recipient.name!r} agent; it must return the rewritten text as a str."
                    )
                text = rewritten
            if not self.redact_after_rewrite:
                return text
        # The deterministic pass runs last, whatever the model produced.
        return redact(text, self.private_values(source_record, recipient, extra), REDACTED)

    def persist(
        self,
        agent: AgentSpec,
        text: str,
        record: Mapping[str, Any],
        ledger: Optional[DataFlowLedger] = None,
        extra: frozenset = frozenset(),
    ) -> str:
        """Store a message in an agent's memory bank; the same redaction applies as for delivery."""
        clean = self.sanitise(text, record, agent, extra)
        agent.memory.append({"role": "assistant", "content": clean})
        if ledger is not None:
            ledger.record(
                agent.name,
                agent.label_id,
                "memory",
                clean,
                record,
                lambda f: self.policy.is_allowed(f, agent.label_id) or f in extra,
            )
        return clean

    # ---------------------------------------------------------------- step 6: elevation
    def elevate(self, agent: AgentSpec, field_name: str) -> bool:
        """Ask the user (through the callback) for one field outside the policy; log the decision."""
        granted = bool(self.request_permission(agent.name, field_name))
        self.elevations.append({"agent": agent.name, "field": field_name, "granted": granted})
        return granted
