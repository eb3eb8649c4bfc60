"""Agents and the per-field permission policy (paper step 1, "registration")."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hf_trust.atomic import atomic_write_json
from hf_trust.errors import HFTrustCacheError, HFTrustConfigError, HFTrustDataError, HFTrustTypeError
from hf_trust.fingerprint import json_sha256

ChatBackend = Callable[..., str]

LABELLER_PROMPT = (
    'An agent describes its responsibilities as: "{description}"\n'
    "Does it strictly need the user's {field} ({field_description}) to do its job? Answer yes or no."
)


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
            raise HFTrustTypeError(f"AgentSpec {self.name!r}: label_id must be an int, got {self.label_id!r}.")


def _labels_of(entry: Any, field_name: str) -> frozenset[int]:
    if not isinstance(entry, Mapping) or "label" not in entry:
        raise HFTrustDataError(
            f"Profile field {field_name!r} has no 'label' list; every entry must be "
            "{'value': ..., 'description': ..., 'label': [agent ids]} (or build the policy with PrivacyPolicy.from_llm)."
        )
    try:
        return frozenset(int(x) for x in entry["label"])
    except (TypeError, ValueError) as exc:
        raise HFTrustDataError(
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
        self.cache_key_: Optional[str] = None  # set for LLM-labelled policies (see cache_key)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_labels(cls, profile: Mapping[str, Any]) -> PrivacyPolicy:
        """Read the per-entry ``label`` lists of one profile (the released data precomputes the labels)."""
        if not isinstance(profile, Mapping) or not profile:
            raise HFTrustDataError("PrivacyPolicy.from_labels needs a non-empty profile dict {field: entry}.")
        fields = {k: v for k, v in profile.items() if k != "user_id"}
        return cls({f: _labels_of(e, f) for f, e in fields.items()}, source="labels")

    @staticmethod
    def cache_key(agents: Iterable[AgentSpec], fields: Mapping[str, str], labeller_id: str) -> str:
        """SHA-256 of everything that determines an LLM-labelled policy: every agent's name, label id and
        self-description, every field and its description, the labeller prompt and the labeller's identity."""
        payload = {
            "agents": [[a.name, a.label_id, a.self_description] for a in agents],
            "fields": sorted(fields.items()),
            "prompt": LABELLER_PROMPT,
            "labeller": labeller_id,
        }
        return json_sha256(payload)

    @classmethod
    def from_llm(
        cls,
        agents: Iterable[AgentSpec],
        fields: Mapping[str, str],
        labeller: ChatBackend,
        cache_path: str | Path | None = None,
        labeller_id: Optional[str] = None,
    ) -> PrivacyPolicy:
        """Ask an LLM, per (field, agent), whether the agent's self-description needs the field.

        Args:
            agents: the registered agents (their ``self_description`` is shown to the labeller).
            fields: field name -> description of the field.
            labeller: a chat backend; an answer starting with "yes" grants the field.
            cache_path: when given, a cached policy whose key matches (:meth:`cache_key`) is loaded instead of
                asking again; a cache for other agents, fields, prompt or labeller, or an unreadable one, is
                recomputed (with a warning) and replaced atomically, with every question and answer in its
                audit log.
            labeller_id: what identifies the labeller model (name and revision); required with ``cache_path``,
                because a callable cannot be fingerprinted and a cache from another model must not be reused.
        """
        agents = list(agents)
        key = None
        if cache_path is not None:
            if not labeller_id:
                raise HFTrustConfigError(
                    "PrivacyPolicy.from_llm(cache_path=...) needs labeller_id (e.g. the model name and revision), "
                    "so a cache written by another labeller is never reused."
                )
            key = cls.cache_key(agents, fields, labeller_id)
            cached = cls._cached(cache_path, key)
            if cached is not None:
                return cached
        allowed, log = _ask_labeller(agents, fields, labeller)
        policy = cls(allowed, source="llm", audit_log=log)
        policy.cache_key_ = key
        if cache_path is not None:
            policy.save(cache_path)
        return policy

    @classmethod
    def _cached(cls, cache_path: str | Path, key: str) -> Optional[PrivacyPolicy]:
        """The policy saved at ``cache_path`` when its key is ``key``; ``None`` (with a warning when a file was
        there) when it is missing, unreadable or built for other agents, fields or labeller."""
        if not Path(cache_path).is_file():
            return None
        try:
            cached = cls.load(cache_path)
        except HFTrustCacheError as exc:
            warnings.warn(f"{exc} Recomputing the policy.", stacklevel=3)
            return None
        if cached.cache_key_ == key:
            return cached
        warnings.warn(
            f"Policy cache {cache_path} was built for other agents, fields or labeller; recomputing it.", stacklevel=3
        )
        return None

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
            "cache_key": self.cache_key_,
        }

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON, atomically (a crash never leaves a half policy for the next run)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PrivacyPolicy:
        """Read a saved policy; a truncated or malformed file raises :class:`HFTrustCacheError` naming it."""
        try:
            data = json.loads(Path(path).read_text())
            policy = cls(data["allowed"], source=data.get("source", "manual"), audit_log=data.get("audit_log"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HFTrustCacheError(
                f"Policy file {path} is unreadable or malformed ({type(exc).__name__}: {exc}); delete it or "
                "rebuild it with PrivacyPolicy.from_llm / from_labels."
            ) from exc
        policy.cache_key_ = data.get("cache_key")
        return policy

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivacyPolicy) and self.allowed == other.allowed

    def __repr__(self) -> str:
        return f"PrivacyPolicy({len(self.allowed)} fields, source={self.source!r})"


def _ask_labeller(
    agents: list[AgentSpec], fields: Mapping[str, str], labeller: ChatBackend
) -> tuple[dict[str, set[int]], list[dict]]:
    """One labeller question per (agent, field): the permissions granted and the audit log of every reply."""
    allowed: dict[str, set[int]] = {f: set() for f in fields}
    log = []
    for agent in agents:
        if not agent.self_description:
            raise HFTrustConfigError(
                f"Agent {agent.name!r} has no self_description; the LLM labeller needs one: "
                "pass AgentSpec(..., self_description=...)."
            )
        for fname, desc in fields.items():
            prompt = LABELLER_PROMPT.format(description=agent.self_description, field=fname, field_description=desc)
            reply = str(labeller([{"role": "user", "content": prompt}]))
            grant = reply.strip().lower().startswith("yes")
            if grant:
                allowed[fname].add(agent.label_id)
            log.append(
                {"agent": agent.name, "label_id": agent.label_id, "field": fname, "reply": reply, "granted": grant}
            )
    return allowed, log
