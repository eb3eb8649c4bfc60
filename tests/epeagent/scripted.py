"""Deterministic chat backends for the EPEAgent tests (test helpers, not part of the library API)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

from hf_trust.agents.backends import render, validate_messages


class ScriptedBackend:
    """A backend that answers with ``fn(messages, tools)`` and records every prompt it was handed."""

    def __init__(self, fn: Callable[[Sequence[dict], Optional[Sequence[Callable]]], str]) -> None:
        self.fn = fn
        self.prompts: list[str] = []

    def __call__(self, messages: Sequence[dict], tools: Optional[Sequence[Callable]] = None) -> str:
        validate_messages(messages)
        self.prompts.append(render(messages))
        return self.fn(messages, tools)


class EchoBackend(ScriptedBackend):
    """Worst-case leaky summariser: repeats its whole context (and calls every tool offered with ``tool_args``)."""

    def __init__(self, tool_args: Optional[dict] = None) -> None:
        def echo(messages, tools):
            parts = [str(m.get("content", "")) for m in messages]
            for t in tools or []:
                parts.append(t(**(tool_args or {})))
            return "\n".join(parts)

        super().__init__(echo)


class ConstantBackend(ScriptedBackend):
    """Always answers ``text`` (e.g. always refuse, or always "(a)")."""

    def __init__(self, text: str) -> None:
        super().__init__(lambda messages, tools: text)


class RecordingBackend(ScriptedBackend):
    """Wraps another backend and records the prompts handed to it."""

    def __init__(self, inner: Callable[..., str]) -> None:
        super().__init__(lambda messages, tools: inner(messages, tools=tools) if tools else inner(messages))
