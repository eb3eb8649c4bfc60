"""The data-flow ledger: every delivered prompt, and which profile fields it carried to whom.

Detection uses :class:`~hf_trust.agents.leakage.LeakageDetector` (value forms plus canaries), which shares no
code with the privacy agent it audits.  The ledger keeps the delivered texts, so the leakage and recall rates
(:meth:`DataFlowLedger.report`) are recomputed from what was actually handed over, not from bookkeeping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from hf_trust.atomic import atomic_write_text
from hf_trust.errors import HFTrustConfigError

from ..leakage import Exposure, LeakageDetector, LeakageReport, measure_leakage

#: Channels that carry user data.  The question channel carries the evaluator's question (its MCQ options
#: may name a field's true value by construction), so it is recorded but never scanned for leakage.
DATA_CHANNELS = ("rag", "tool", "context", "memory", "elevated")

#: Sender recorded for profile data handed out at retrieval (the ``rag`` and ``tool`` channels).
PROFILE_STORE = "profile_store"
#: Sender recorded for the evaluator's question.
USER = "user"


def default_sender(channel: str, recipient: str) -> str:
    """Who sends on ``channel`` when the caller does not say: the profile store for retrieved data, the user for
    the question, the agent itself for its own memory.  Inter-agent channels have no default (see
    :meth:`DataFlowLedger.record`)."""
    if channel in ("rag", "tool"):
        return PROFILE_STORE
    if channel == "question":
        return USER
    if channel == "memory":
        return recipient
    raise HFTrustConfigError(
        f"A delivery on the {channel!r} channel to {recipient!r} needs its sender: pass sender=<agent name> "
        "to DataFlowLedger.record (the ledger keeps who sent every delivery)."
    )


@dataclass(frozen=True)
class LedgerEntry:
    """One profile field found in one delivered message."""

    recipient: str
    label_id: int
    field: str
    channel: str  # "rag" | "tool" | "context" | "memory" | "elevated"
    allowed: bool
    episode: int = 0
    forms: tuple[str, ...] = ()
    sender: str = ""


@dataclass
class Delivery:
    """One delivered string (its text is kept for the leakage rates, not written by :meth:`to_jsonl`)."""

    recipient: str
    label_id: int
    channel: str
    chars: int
    episode: int = 0
    text: str = field(default="", repr=False)
    sender: str = ""


@dataclass
class DataFlowLedger:
    """Append-only record of what reached whom."""

    entries: list[LedgerEntry] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    episode: int = 0
    records: dict[int, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    permitted: dict[tuple[int, str], frozenset[str]] = field(default_factory=dict, repr=False)
    undeliverable: list[str] = field(default_factory=list)
    _detectors: dict[int, tuple[Mapping[str, Any], LeakageDetector]] = field(default_factory=dict, repr=False)

    def record(
        self,
        recipient: str,
        label_id: int,
        channel: str,
        text: str,
        record: Mapping[str, Any],
        is_allowed: Callable[[str], bool],
        sender: Optional[str] = None,
    ) -> list[LedgerEntry]:
        """Keep one delivered string and append an entry per profile field it carries.

        ``is_allowed(field) -> bool`` is the ground truth for this recipient in this episode (policy plus
        granted elevations); it fills the ``allowed`` column and the denominators of the rates.  ``sender`` is
        who handed the text over; it defaults to :data:`PROFILE_STORE` for retrieval, :data:`USER` for the
        question and the recipient for its own memory, and must be given for inter-agent channels.
        """
        sender = sender if sender is not None else default_sender(channel, recipient)
        self.deliveries.append(Delivery(recipient, label_id, channel, len(text), self.episode, text, sender))
        self.records.setdefault(self.episode, record)
        key = (self.episode, recipient)
        if key not in self.permitted:
            self.permitted[key] = frozenset(f for f in record if f != "user_id" and is_allowed(f))
        if channel not in DATA_CHANNELS:
            return []
        cached = self._detectors.get(id(record))
        if cached is None or cached[0] is not record:  # the record is kept with its detector, so ids stay valid
            cached = self._detectors[id(record)] = (record, LeakageDetector(record))
        det = cached[1]
        new = [
            LedgerEntry(recipient, label_id, f, channel, bool(is_allowed(f)), self.episode, forms, sender)
            for f, forms in det.find(text).items()
        ]
        self.entries.extend(new)
        return new

    def next_episode(self) -> None:
        self.episode += 1

    def violations(self) -> list[LedgerEntry]:
        return [e for e in self.entries if not e.allowed]

    def fields_seen(self, recipient: str, episode: Optional[int] = None) -> set[str]:
        return {e.field for e in self.entries if e.recipient == recipient and (episode is None or e.episode == episode)}

    def recipients(self, episode: Optional[int] = None) -> dict[str, int]:
        return {d.recipient: d.label_id for d in self.deliveries if episode is None or d.episode == episode}

    def episodes(self) -> list[int]:
        return sorted({d.episode for d in self.deliveries})

    def exposures(self) -> list[Exposure]:
        """Per (episode, recipient): everything it received on the data channels, joined in delivery order."""
        texts: dict[tuple[int, str], list[str]] = {}
        for d in self.deliveries:
            texts.setdefault((d.episode, d.recipient), [])
            if d.channel in DATA_CHANNELS:
                texts[(d.episode, d.recipient)].append(d.text)
        return [
            Exposure(ep, rec, "\n".join(parts), self.records[ep], self.permitted[(ep, rec)], tuple(parts))
            for (ep, rec), parts in texts.items()
        ]

    def report(
        self, field_types: Optional[Mapping[str, str]] = None, judge: Optional[Callable[..., str]] = None
    ) -> LeakageReport:
        """Value-level leakage, permitted recall, canary and (optional) judge rates of everything recorded."""
        return measure_leakage(self.exposures(), field_types=field_types, judge=judge, undeliverable=self.undeliverable)

    def extend(self, other: DataFlowLedger) -> None:
        """Append another ledger's records as new episodes of this one."""
        base = (max(self.episodes()) + 1) if self.deliveries else 0
        for d in other.deliveries:
            self.deliveries.append(
                Delivery(d.recipient, d.label_id, d.channel, d.chars, d.episode + base, d.text, d.sender)
            )
        for e in other.entries:
            self.entries.append(
                LedgerEntry(e.recipient, e.label_id, e.field, e.channel, e.allowed, e.episode + base, e.forms, e.sender)
            )
        for ep, rec in other.records.items():
            self.records[ep + base] = rec
        for (ep, name), fields in other.permitted.items():
            self.permitted[(ep + base, name)] = fields
        self.undeliverable += [f for f in other.undeliverable if f not in self.undeliverable]
        self.episode = (max(self.episodes()) + 1) if self.deliveries else 0

    def to_jsonl(self, path: str | Path) -> Path:
        """Write one JSON line per entry, atomically (a crash never leaves a half ledger)."""
        lines = [json.dumps({**asdict(e), "forms": list(e.forms)}) for e in self.entries]
        return atomic_write_text(path, "".join(line + "\n" for line in lines))

    def __len__(self) -> int:
        return len(self.entries)
