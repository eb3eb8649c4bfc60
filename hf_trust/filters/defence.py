"""The full BYE defence (Algorithm 1): fine-tune on D → score → filter → re-fine-tune the *base* on D_clean.

BYE needs a model fine-tuned on the submitted (possibly poisoned) data before it can see attention collapse,
so the defence is two fine-tunes around the filter.  ``lora_finetune`` is a small PEFT-LoRA loop for that;
any ``finetune(model, dataset) -> model`` callable (e.g. one wrapping ``transformers.Trainer``) can replace it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from tqdm.auto import tqdm

from hf_trust.errors import HFTrustDataError

from .bye import BYEFilter
from .report import BYEReport


@dataclass
class DefenceResult:
    """What the defence produced: both models, the audited scored set, the cleaned set and the report."""

    poisoned_model: Any
    clean_model: Any
    scored: Any
    clean_dataset: Any
    report: BYEReport


def lora_finetune(
    model: Any,
    ds: Any,
    collate_fn: Callable[[list[dict]], dict],
    *,
    steps: int = 100,
    batch_size: int = 16,
    lr: float = 1e-3,
    r: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    modules_to_save: Optional[Sequence[str]] = ("multi_modal_projector",),
    seed: int = 0,
    progress: bool = True,
    answer_logits_only: bool = True,
) -> Any:
    """LoRA (PEFT) on the decoder attention + a trainable projector; ``collate_fn(rows)`` returns inputs
    with ``labels``.  Returns the PEFT-wrapped model in eval mode.

    ``answer_logits_only`` computes the vocabulary projection only from the first labelled position on
    (``logits_to_keep``); the loss is the same token-mean cross-entropy as the model's own, but a short answer
    after a long image+prompt prefix no longer pays for logits over the whole sequence.
    """
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )
    model = get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(steps), desc="LoRA fine-tune", disable=not progress):
        idx = torch.randint(len(ds), (batch_size,), generator=g).tolist()
        batch = collate_fn([ds[i] for i in idx])
        loss = answer_loss(model, batch) if answer_logits_only else model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def answer_loss(model: Any, batch: dict) -> torch.Tensor:
    """Causal-LM loss over the labelled tokens, with logits computed only where a label follows.

    Equal to ``model(**batch).loss`` (mean over tokens whose label is not -100) for models that accept
    ``logits_to_keep``.
    """
    labels = batch["labels"]
    valid = labels[:, 1:] != -100
    if not bool(valid.any()):
        raise HFTrustDataError(
            "The batch has no labelled tokens (every label is -100); the collate function must label the answer tokens."
        )
    first = int(valid.any(0).nonzero()[0]) + 1  # first label position that is predicted
    keep = labels.shape[1] - first + 1  # logits at first-1 .. end
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits[:, :-1].float()
    target = labels[:, first:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
    )


def bye_defence(
    make_base: Callable[[], Any], finetune: Callable[[Any, Any], Any], ds: Any, **filter_kwargs: Any
) -> DefenceResult:
    """Run Algorithm 1 end to end.

    Args:
        make_base: returns a fresh base model (called twice: once per fine-tune, so D_clean never sees the
            poisoned weights).
        finetune: ``(model, dataset) -> fine-tuned model`` (e.g. ``functools.partial(lora_finetune, ...)``).
        ds: the submitted dataset (image, question, answer columns).
        **filter_kwargs: passed to :class:`BYEFilter` (``processor`` or ``collate_fn`` and options).
    """
    poisoned = finetune(make_base(), ds)
    bye = BYEFilter(poisoned, **filter_kwargs)
    scored = bye.score(ds)
    keep = [i for i, s in enumerate(scored["bye_suspicious"]) if not s]
    clean = scored.select(keep)
    clean_model = finetune(make_base(), clean) if len(keep) < len(ds) else poisoned
    return DefenceResult(poisoned, clean_model, scored, clean, bye.report_)
