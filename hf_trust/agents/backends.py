"""Chat backends: ``backend(messages, tools=None) -> str``.

:func:`hf_chat_backend` drives any transformers chat model through its chat template, passing tools the
standard way (``apply_chat_template(tools=...)``) and parsing tool calls with ``tokenizer.parse_response``
when the tokenizer has a response schema.  Any plain function ``fn(messages, tools=None) -> str`` is a backend
too (that is how deterministic agents are written in tests and studies).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Optional

from hf_trust.errors import HFTrustConfigError, HFTrustKeyError, HFTrustTypeError


def render(messages: Sequence[dict]) -> str:
    """The text a backend receives, flattened (what leakage is measured on)."""
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)


def validate_messages(messages: Any) -> None:
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise HFTrustTypeError("A chat backend takes a list of {'role': ..., 'content': ...} messages.")


def hf_chat_backend(
    model: Any,
    tokenizer: Any,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    max_tool_rounds: int = 2,
) -> Callable[..., str]:
    """Wrap a transformers causal LM and its tokenizer as a chat backend.

    Args:
        model: any ``AutoModelForCausalLM`` with a chat-template tokenizer.
        tokenizer: its tokenizer (must have ``chat_template``).
        max_new_tokens: generation length per call.
        temperature: 0 = greedy; the paper's code samples at 0.7.
        seed: torch seed set before each sampled call, for reproducibility.
        max_tool_rounds: how many tool-call/-result rounds one call may take.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise HFTrustConfigError(
            "hf_chat_backend needs a tokenizer with a chat_template (an instruct/chat model); "
            "set tokenizer.chat_template or use another backend."
        )

    def backend(messages: Sequence[dict], tools: Optional[Sequence[Callable]] = None) -> str:
        validate_messages(messages)
        msgs = list(messages)
        by_name = {t.__name__: t for t in (tools or [])}
        if by_name:
            _check_tool_parsing(tokenizer)
        for _ in range(max_tool_rounds + 1):
            prompt = tokenizer.apply_chat_template(
                msgs, tools=list(tools) if tools else None, add_generation_prompt=True, tokenize=False
            )
            text = _generate(model, tokenizer, prompt, max_new_tokens, temperature, seed)
            calls = _tool_calls(tokenizer, text) if by_name else []
            if not calls:
                return _strip_special(tokenizer, text)
            msgs.append({"role": "assistant", "tool_calls": calls})
            msgs += _run_tool_calls(calls, by_name)
        return _strip_special(tokenizer, text)

    return backend


def _generate(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int, temperature: float, seed: int) -> str:
    """The model's continuation of ``prompt`` (special tokens kept: tool-call markers are parsed from them)."""
    import torch

    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    # Some tokenizers return token_type_ids, which causal LMs' generate() rejects (transformers 4.x).
    enc.pop("token_type_ids", None)
    kw = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    if temperature > 0:
        torch.manual_seed(seed)
        kw.update(do_sample=True, temperature=temperature)
    else:
        kw.update(do_sample=False)
    with torch.no_grad():
        out = model.generate(**enc, **kw)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)


def _check_tool_parsing(tokenizer: Any) -> None:
    if not hasattr(tokenizer, "parse_response"):
        import transformers

        raise HFTrustConfigError(
            f"hf_chat_backend was offered tools, but transformers {transformers.__version__} has no "
            "tokenizer.parse_response to read the model's tool calls (transformers >= 5 has it); upgrade "
            "transformers, or run the orchestrator with rag='context' so that no tool is offered."
        )


def _run_tool_calls(calls: Sequence[dict], by_name: dict[str, Callable]) -> list[dict]:
    """Call the offered tools the model asked for; one ``tool`` message per call, in order."""
    replies = []
    for call in calls:
        fn = call["function"]
        if fn["name"] not in by_name:
            raise HFTrustKeyError(f"The model called an unknown tool {fn['name']!r}; offered: {sorted(by_name)}.")
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            args = json.loads(args)
        replies.append({"role": "tool", "name": fn["name"], "content": by_name[fn["name"]](**args)})
    return replies


def _strip_special(tokenizer: Any, text: str) -> str:
    # Tool-call markers are special tokens, so decoding keeps them for parsing; the answer drops them.
    for tok in getattr(tokenizer, "all_special_tokens", []):
        text = text.replace(tok, "")
    return text.strip()


def _tool_calls(tokenizer: Any, text: str) -> list[dict]:
    """Tool calls parsed by the tokenizer's response schema; none when it has no schema."""
    if getattr(tokenizer, "response_schema", None) is None and getattr(tokenizer, "response_template", None) is None:
        return []
    try:
        parsed = tokenizer.parse_response(text, prefix="")
    except Exception:  # an unparsable reply is plain text, not an error
        return []
    return list(parsed.get("tool_calls") or []) if isinstance(parsed, dict) else []
