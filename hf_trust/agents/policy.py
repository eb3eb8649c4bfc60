"""Agents and the per-field permission policy (paper step 1, "registration")."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hf_trust.errors import HFTrustError

ChatBackend = Callable[..., str]


@dataclass
class AgentSpec:
    """One local agent: the paper's triple (backbone LLM, role prompt, memory bank).

    Args:
        name: unique agent name, used in the topology and the ledger.
        label_id: the integer id that profile entries list in their ``label`` (e.g. 1..3 financial, 4..6 medical).
        role_prompt: the system prompt describing the agent's role.
        backbone: a chat backend ``backend(messages, tools=None) -> str``.
        self_description: what the agent tells the privacy agent at registration; an LLM labeller reads it.
    """

    name: str
    label_id: int
    role_prompt: str
    backbone: Optional[ChatBackend] = None
    self_description: str = ""
    memory: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.label_id, int):
            raise HFTrustError(f"AgentSpec {self.name!r}: label_id must be an int, got {self.label_id!r}.")


def _labels_of(entry: Any, field_name: str) -> frozenset[int]:
    if not isinstance(entry, Mapping) or "label" not in entry:
        raise HFTrustError(
            f"Profile field {field_name!r} has no 'label' list; every entry must be "
            "{'value': ..., 'description': ..., 'label': [agent ids]} (or build the policy with PrivacyPolicy.from_llm)."
        )
    try:
        return frozenset(int(x) for x in entry["label"])
    except (TypeError, ValueError) as exc:
        raise HFTrustError(
            f"Profile field {field_name!r}: label must be a list of agent ids, got {entry['label']!r}."
        ) from exc


class PrivacyPolicy:
    """Which agents may see which profile field (``M_min^u(i) = {e : i in e.label}``, Eq. 5).

    The mapping is plain data: adding an agent or a field is a policy change, never a code change.
    ``source`` and ``audit_log`` record how every permission was decided, so a policy can be reviewed and saved.
    """

    def __init__(
        self, allowed: Mapping[str, Iterable[int]], source: str = "manual", audit_log: Optional[list[dict]] = None
    ) -> None:
        self.allowed: dict[str, frozenset[int]] = {f: frozenset(int(a) for a in ids) for f, ids in allowed.items()}
        self.source = source
        self.audit_log = list(audit_log or [])

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_labels(cls, profile: Mapping[str, Any]) -> PrivacyPolicy:
        """Read the per-entry ``label`` lists of one profile (the released data precomputes the labels)."""
        if not isinstance(profile, Mapping) or not profile:
            raise HFTrustError("PrivacyPolicy.from_labels needs a non-empty profile dict {field: entry}.")
        fields = {k: v for k, v in profile.items() if k != "user_id"}
        return cls({f: _labels_of(e, f) for f, e in fields.items()}, source="labels")

    @classmethod
    def from_llm(
        cls,
        agents: Iterable[AgentSpec],
        fields: Mapping[str, str],
        labeller: ChatBackend,
        cache_path: str | Path | None = None,
    ) -> PrivacyPolicy:
        """Ask an LLM, per (field, agent), whether the agent's self-description needs the field.

        Args:
            agents: the registered agents (their ``self_description`` is shown to the labeller).
            fields: field name -> description of the field.
            labeller: a chat backend; an answer starting with "yes" grants the field.
            cache_path: when given and present, the cached policy is loaded instead of asking again; otherwise
                the new policy is saved there, with every question and answer in its audit log.
        """
        if cache_path is not None and Path(cache_path).is_file():
            return cls.load(cache_path)
        allowed: dict[str, set[int]] = {f: set() for f in fields}
        log = []
        for agent in agents:
            if not agent.self_description:
                raise HFTrustError(f"Agent {agent.name!r} has no self_description; the LLM labeller needs one.")
            for fname, desc in fields.items():
                prompt = (
                    f'An agent describes its responsibilities as: "{agent.self_description}"\n'
                    f"Does it strictly need the user's {fname} ({desc}) to do its job? Answer yes or no."
                )
                reply = str(labeller([{"role": "user", "content": prompt}]))
                grant = reply.strip().lower().startswith("yes")
                if grant:
                    allowed[fname].add(agent.label_id)
                log.append(
                    {"agent": agent.name, "label_id": agent.label_id, "field": fname, "reply": reply, "granted": grant}
                )
        policy = cls(allowed, source="llm", audit_log=log)
        if cache_path is not None:
            policy.save(cache_path)
        return policy

    # ---------------------------------------------------------------- queries
    def is_allowed(self, field_name: str, label_id: int) -> bool:
        """Unknown fields are denied: a field nobody labelled is private by default."""
        return label_id in self.allowed.get(field_name, frozenset())

    def fields_for(self, label_id: int) -> list[str]:
        return [f for f, ids in self.allowed.items() if label_id in ids]

    def agents_for(self, field_name: str) -> frozenset[int]:
        return self.allowed.get(field_name, frozenset())

    def with_grant(self, field_name: str, label_id: int, reason: str = "") -> PrivacyPolicy:
        """A copy with one extra permission (used by dynamic elevation; the original stays untouched)."""
        allowed = dict(self.allowed)
        allowed[field_name] = allowed.get(field_name, frozenset()) | {label_id}
        log = self.audit_log + [{"field": field_name, "label_id": label_id, "granted": True, "reason": reason}]
        return PrivacyPolicy(allowed, source=self.source, audit_log=log)

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return {
            "allowed": {f: sorted(ids) for f, ids in self.allowed.items()},
            "source": self.source,
            "audit_log": self.audit_log,
        }

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> PrivacyPolicy:
        data = json.loads(Path(path).read_text())
        return cls(data["allowed"], source=data.get("source", "manual"), audit_log=data.get("audit_log"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivacyPolicy) and self.allowed == other.allowed

    def __repr__(self) -> str:
        return f"PrivacyPolicy({len(self.allowed)} fields, source={self.source!r})"
