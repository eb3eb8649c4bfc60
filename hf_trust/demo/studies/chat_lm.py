"""Chat-formatted supervised examples and the answer-only loss shared by the ThanoRA demo recipe and
``benchmarks/thanora_ablation.py``: one definition of how a held-out answer NLL is computed."""

from __future__ import annotations

from hf_trust.demo.recipes._chat_data import encode


def collate(examples, pad_id, with_labels: bool = True):
    """Left-padded batch of (ids, labels, prompt ids) triples; calibration batches skip labels and the LM head."""
    import torch

    width = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, (i, lab, _) in enumerate(examples):
        ids[r, width - len(i) :] = torch.tensor(i)
        labels[r, width - len(lab) :] = torch.tensor(lab)
        mask[r, width - len(i) :] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}
    if with_labels:
        batch["labels"] = labels
    else:
        batch["logits_to_keep"] = 1  # only the layer inputs matter for the statistics
    return batch


def answer_loss(model, batch):
    """(mean NLL over answer tokens, their count), with logits only on the last K positions."""
    import torch

    labels = batch["labels"]
    k = int((labels != -100).sum(1).max()) + 1
    inputs = {key: v for key, v in batch.items() if key != "labels"}
    logits = model(**inputs, logits_to_keep=k).logits[:, :-1].float()
    target = labels[:, -k + 1 :]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
    )
    return loss, int((target != -100).sum())


def answer_nll(model, examples, pad_id) -> float:
    import torch

    total = n = 0.0
    with torch.no_grad():
        for s in range(0, len(examples), 8):
            loss, k = answer_loss(model, collate(examples[s : s + 8], pad_id))
            total += float(loss) * k
            n += k
    return total / max(n, 1)


__all__ = ["answer_loss", "answer_nll", "collate", "encode"]
