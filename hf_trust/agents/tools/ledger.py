"""The data-flow ledger: (recipient, field, channel, allowed?) for every delivered prompt."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..sanitise import find_fields


@dataclass(frozen=True)
class LedgerEntry:
    """One profile field found in one delivered message."""

    recipient: str
    label_id: int
    field: str
    channel: str  # "rag" | "tool" | "context" | "memory" | "elevated" | "question"
    allowed: bool
    episode: int = 0


@dataclass
class Delivery:
    recipient: str
    label_id: int
    channel: str
    chars: int
    episode: int = 0


@dataclass
class DataFlowLedger:
    """Append-only record of what reached whom.

    Detection looks for each field's ``canary`` when the record carries canaries (exact, no false positives),
    else for its ``value`` in canonical forms.
    """

    entries: list[LedgerEntry] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    episode: int = 0

    def record(
        self, recipient: str, label_id: int, channel: str, text: str, record: Mapping[str, Any], is_allowed
    ) -> list[LedgerEntry]:
        """Scan one delivered string and append an entry per field it carries.

        ``is_allowed(field) -> bool`` decides the ``allowed`` column (policy plus granted elevations).
        """
        self.deliveries.append(Delivery(recipient, label_id, channel, len(text), self.episode))
        key = "canary" if any(isinstance(e, Mapping) and "canary" in e for e in record.values()) else "value"
        new = [
            LedgerEntry(recipient, label_id, f, channel, bool(is_allowed(f)), self.episode)
            for f in find_fields(text, record, key=key)
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

    def extend(self, other: DataFlowLedger) -> None:
        """Append another ledger's records as new episodes of this one."""
        base = (max(self.episodes()) + 1) if self.deliveries else 0
        for d in other.deliveries:
            self.deliveries.append(Delivery(d.recipient, d.label_id, d.channel, d.chars, d.episode + base))
        for e in other.entries:
            self.entries.append(LedgerEntry(e.recipient, e.label_id, e.field, e.channel, e.allowed, e.episode + base))
        self.episode = (max(self.episodes()) + 1) if self.deliveries else 0

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w") as fh:
            for e in self.entries:
                fh.write(json.dumps(asdict(e)) + "\n")

    def __len__(self) -> int:
        return len(self.entries)
