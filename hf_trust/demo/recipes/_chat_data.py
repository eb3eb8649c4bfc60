"""Chat-formatted supervised examples shared by the LoRA-family recipes."""

from __future__ import annotations


def encode(tok, rows, max_len: int = 96):
    """Chat-formatted (question, answer) → (input ids, labels on the answer tokens only, prompt ids)."""
    out = []
    for q, a in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = (p_ids + a_ids)[-max_len:]
        labels = ([-100] * len(p_ids) + a_ids)[-max_len:]
        out.append((ids, labels, p_ids[-(max_len - 16) :]))
    return out
