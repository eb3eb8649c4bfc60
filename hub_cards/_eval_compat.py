"""The Hub's ``.eval_results`` entry type, on every ``huggingface_hub`` the package supports.

``huggingface_hub`` ships ``EvalResultEntry`` (the ``.eval_results/*.yaml`` format) only from its 1.x releases; the
floor of this package (0.36) predates it. On such a version the same three names are defined here with the same
fields and YAML shape, and :data:`HUB_HAS_EVAL_RESULTS` is ``False``: :func:`hf_trust.hub_cards.push_adapter` then
writes the results as the card's ``model-index`` (the format that version understands) instead of an
``.eval_results`` file, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

try:
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml, parse_eval_result_entries

    HUB_HAS_EVAL_RESULTS = True
except ImportError:
    HUB_HAS_EVAL_RESULTS = False

    @dataclass
    class EvalResultEntry:  # type: ignore[no-redef]
        """One evaluation result: a Hub benchmark dataset, its task and the measured value."""

        dataset_id: str
        task_id: str
        value: Any
        dataset_revision: Optional[str] = None
        verify_token: Optional[str] = None
        date: Optional[str] = None
        source_url: Optional[str] = None
        source_name: Optional[str] = None
        source_user: Optional[str] = None
        source_org: Optional[str] = None
        notes: Optional[str] = None

    def eval_result_entries_to_yaml(entries: list[EvalResultEntry]) -> list[dict[str, Any]]:  # type: ignore[misc]
        """The ``.eval_results`` dict form of ``entries`` (dataset id / task id / revision, value, the rest)."""
        rows = []
        for e in entries:
            dataset = {"id": e.dataset_id, "task_id": e.task_id}
            if e.dataset_revision is not None:
                dataset["revision"] = e.dataset_revision
            row: dict[str, Any] = {"dataset": dataset, "value": e.value}
            if e.verify_token is not None:
                row["verifyToken"] = e.verify_token
            if e.date is not None:
                row["date"] = e.date
            source = {
                k: v
                for k, v in (
                    ("url", e.source_url),
                    ("name", e.source_name),
                    ("user", e.source_user),
                    ("org", e.source_org),
                )
                if v is not None
            }
            if source:
                row["source"] = source
            if e.notes is not None:
                row["notes"] = e.notes
            rows.append(row)
        return rows

    def parse_eval_result_entries(data: list[dict[str, Any]]) -> list[EvalResultEntry]:  # type: ignore[misc]
        """Entries from their ``.eval_results`` dict form (a ``KeyError`` names a missing required key)."""
        out = []
        for item in data:
            body = item.get("data", item)
            dataset = body["dataset"]
            source = body.get("source") or {}
            out.append(
                EvalResultEntry(
                    dataset_id=dataset["id"],
                    task_id=dataset["task_id"],
                    value=body["value"],
                    dataset_revision=dataset.get("revision"),
                    verify_token=body.get("verifyToken"),
                    date=body.get("date"),
                    source_url=source.get("url"),
                    source_name=source.get("name"),
                    source_user=source.get("user"),
                    source_org=source.get("org"),
                    notes=body.get("notes"),
                )
            )
        return out


__all__ = ["HUB_HAS_EVAL_RESULTS", "EvalResultEntry", "eval_result_entries_to_yaml", "parse_eval_result_entries"]
