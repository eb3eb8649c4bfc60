"""A learned privacy agent: a chat model fine-tuned with TRL to rewrite messages to what the recipient may see.

Training data comes from the data generator: for a generated profile and its label policy, an upstream agent's
message restates some of the fields *it* may see, one sentence per field, in varied surface forms ("$226,000",
"226k", "45 years old"), and ends with its answer letter.  The target rewrite for a recipient keeps, verbatim and
in order, exactly the sentences about fields the recipient may see plus the answer sentence: the minimal
disclosure that still carries the upstream agent's conclusion.  Training and evaluation use disjoint sentence
templates (``templates="train"`` / ``"eval"``) as well as disjoint users, so a rewriter that only memorised the
wording does not look good on held-out data.

    from hf_trust.agents.training import PrivacyAgentConfig, rewrite_examples, train_privacy_agent
    rows = rewrite_examples("financial", generate_profiles("financial", 50, seed=100), n_per_profile=4)
    model = train_privacy_agent(model, tokenizer, rows, PrivacyAgentConfig(output_dir="out", max_steps=100))
    pa = PrivacyEnhancingAgent(policy, rewrite_backend=hf_chat_backend(model, tokenizer, max_new_tokens=96),
                               redact_after_rewrite=False)

Loss is on the rewrite tokens only (TRL's prompt-completion format with ``completion_only_loss``).  The model is
trained with a PEFT LoRA adapter; the base weights stay frozen.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, MissingExtraError

from .data import AGENT_ROLES, _check_domain
from .privacy_agent import rewrite_messages

try:  # TRL is a dependency of the package, but keep `import hf_trust.agents` light when it is absent
    from trl import SFTConfig
except ImportError:  # pragma: no cover - exercised only without trl
    SFTConfig = object  # type: ignore[assignment,misc]

TEMPLATES: dict[str, list[str]] = {
    "train": [
        "The user's {p} is {v}.",
        "{P}: {v}.",
        "I see that their {p} is {v}.",
        "Note the {p}, which is {v}.",
    ],
    "eval": [
        "According to the record, the {p} is {v}.",
        "Their {p} appears to be {v}.",
        "For context, {p} = {v}.",
    ],
}
ANSWER_TEMPLATES = {"train": "My answer is ({x}).", "eval": "So I pick ({x})."}


def format_value(value: Any, rng: random.Random) -> str:
    """One of several surface forms of a profile value (the shapes a leaky upstream agent might use)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and value >= 1000:
        return rng.choice(
            [f"${value:,}", f"{value // 1000}k" if value % 1000 == 0 else f"{value:,}", f"{value} dollars"]
        )
    if isinstance(value, int):
        return rng.choice([str(value), f"{value} years"])
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {format_value(v, rng)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(format_value(v, rng) for v in value)
    return str(value)


def upstream_message(
    profile: Mapping[str, Any], fields: Sequence[str], rng: random.Random, templates: str = "train"
) -> tuple[list[tuple[Optional[str], str]], str]:
    """``([(field or None, sentence), ...], answer_letter)``: one sentence per field, then the answer sentence."""
    if templates not in TEMPLATES:
        raise HFTrustConfigError(f"templates must be one of {sorted(TEMPLATES)}, got {templates!r}.")
    sentences: list[tuple[Optional[str], str]] = []
    for f in fields:
        p = f.replace("_", " ")
        t = rng.choice(TEMPLATES[templates])
        sentences.append((f, t.format(p=p, P=p[0].upper() + p[1:], v=format_value(profile[f]["value"], rng))))
    letter = rng.choice("abcd")
    sentences.append((None, ANSWER_TEMPLATES[templates].format(x=letter)))
    return sentences, letter


def minimal_rewrite(sentences: Sequence[tuple[Optional[str], str]], allowed: set[str]) -> str:
    """The target: the sentences about permitted fields and the answer sentence, verbatim, in order."""
    return " ".join(s for f, s in sentences if f is None or f in allowed)


def rewrite_examples(
    domain: str,
    profiles: Sequence[Mapping[str, Any]],
    n_per_profile: int = 4,
    seed: int = 0,
    templates: str = "train",
) -> list[dict]:
    """Prompt-completion rows for :func:`train_privacy_agent` (and for evaluating a rewriter).

    Each row: ``prompt`` (the chat of :func:`~hf_trust.agents.privacy_agent.rewrite_messages`), ``completion``
    (the minimal rewrite as an assistant message), and for auditing ``user_id``, ``sender``, ``recipient``,
    ``message`` (the upstream text), ``allowed`` and ``denied`` (fields of the recipient).
    """
    _check_domain(domain)
    if n_per_profile < 1:
        raise HFTrustConfigError(f"n_per_profile must be >= 1, got {n_per_profile}.")
    if not profiles:
        raise HFTrustDataError("rewrite_examples needs at least one generated profile.")
    rng = random.Random(f"rewrite-{domain}-{seed}-{templates}")
    roles = AGENT_ROLES[domain]
    rows = []
    for prof in profiles:
        fields = [f for f in prof if f != "user_id"]
        labels = {f: set(prof[f]["label"]) for f in fields}
        for _ in range(n_per_profile):
            (sender, sid, _), (recipient, rid, _) = rng.sample(roles, 2)
            seen = [f for f in fields if sid in labels[f]]
            chosen = rng.sample(seen, rng.randint(min(2, len(seen)), min(4, len(seen))))
            sentences, _ = upstream_message(prof, chosen, rng, templates)
            message = " ".join(s for _, s in sentences)
            allowed = [f for f in fields if rid in labels[f]]
            denied = [f for f in fields if rid not in labels[f]]
            rows.append(
                {
                    "prompt": rewrite_messages(message, recipient, denied),
                    "completion": [{"role": "assistant", "content": minimal_rewrite(sentences, set(allowed))}],
                    "user_id": prof["user_id"],
                    "sender": sender,
                    "recipient": recipient,
                    "message": message,
                    "allowed": allowed,
                    "denied": denied,
                }
            )
    return rows


@dataclass
class PrivacyAgentConfig(SFTConfig):  # type: ignore[misc,valid-type]
    """:class:`trl.SFTConfig` with the privacy-rewriter defaults and the LoRA adapter's settings.

    Args (beyond ``SFTConfig``):
        lora_r / lora_alpha / lora_dropout: the LoRA adapter.
        lora_target_modules: projection names to adapt (Llama/Qwen naming by default).

    ``bf16`` defaults to ``False`` on every trl version (pass ``bf16=True`` for mixed precision).
    """

    output_dir: Optional[str] = None
    learning_rate: float = 5e-4
    per_device_train_batch_size: int = 2
    max_steps: int = 100
    max_length: Optional[int] = 384
    completion_only_loss: Optional[bool] = True
    logging_steps: float = 5
    save_strategy: str = "no"
    report_to: Any = "none"
    lr_scheduler_type: str = "constant"
    # Recomputing activations saves memory the 135M rewriter does not need and costs a third more time on CPU.
    gradient_checkpointing: bool = False
    warmup_steps: float = 0
    # Full precision unless asked: trl < 1 turns an unset bf16 into True, even on CPU, and accelerate keeps that
    # mixed precision for every later Trainer of the process (its state is process-wide).
    bf16: Optional[bool] = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        if SFTConfig is object:
            raise MissingExtraError(
                "PrivacyAgentConfig needs the optional module 'trl' (the [agents] extra), which is not installed; "
                'install it with: pip install "hf-trust[agents]"'
            )
        if self.completion_only_loss is False:
            raise HFTrustConfigError(
                "completion_only_loss=False would train the rewriter to reproduce the private prompt too; "
                "keep it True (or None)."
            )
        if self.lora_r < 1:
            raise HFTrustConfigError(f"lora_r must be >= 1, got {self.lora_r}.")
        super().__post_init__()


PROMPT_COLUMNS = ("prompt", "completion")


def build_trainer(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], args: PrivacyAgentConfig) -> Any:
    """A :class:`trl.SFTTrainer` over ``rows`` (from :func:`rewrite_examples`) with a LoRA adapter on ``model``.

    ``model`` is wrapped in place by PEFT (LoRA layers are injected into it); the tokenizer must already have a
    pad token and is not changed.
    """
    import datasets
    from peft import LoraConfig
    from trl import SFTTrainer

    if not isinstance(args, PrivacyAgentConfig):
        raise HFTrustConfigError(f"args must be a PrivacyAgentConfig, got {type(args).__name__}.")
    if not rows:
        raise HFTrustDataError("train_privacy_agent needs at least one row; build them with rewrite_examples().")
    missing = [c for c in PROMPT_COLUMNS if c not in rows[0]]
    if missing:
        raise HFTrustDataError(f"Training rows lack {missing}; build them with rewrite_examples().")
    if getattr(tokenizer, "chat_template", None) is None:
        raise HFTrustConfigError("The rewriter's tokenizer needs a chat_template (use an instruct/chat model).")
    ds = datasets.Dataset.from_list([{c: r[c] for c in PROMPT_COLUMNS} for r in rows])
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    if tokenizer.pad_token is None:
        raise HFTrustConfigError(
            "The tokenizer has no pad token; set one on your tokenizer (e.g. tokenizer.pad_token = "
            "tokenizer.eos_token) before training, so the trainer does not have to change it."
        )
    return SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer, peft_config=lora)


def train_privacy_agent(
    model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], args: PrivacyAgentConfig
) -> tuple[Any, list[dict]]:
    """Fine-tune ``model`` as a minimal-disclosure rewriter; returns ``(peft_model, log_history)``."""
    trainer = build_trainer(model, tokenizer, rows, args)
    trainer.train()
    trained = trainer.model
    trained.eval()
    return trained, list(trainer.state.log_history)
