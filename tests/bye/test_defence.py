"""The end-to-end defence helper (Algorithm 1) and its answer-only loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_trust.filters import BYESelectConfig, bye_defence
from hf_trust.filters.defence import answer_loss

from . import toy


def _labelled_batch(n: int = 3, answer_len=(1, 3, 2)) -> dict:
    """Left-padded prompts + answers of different lengths, labels only on the answers."""
    g = torch.Generator().manual_seed(0)
    prompt = toy.prompt_ids(1)[0].tolist()
    seqs = [prompt + torch.randint(4, 20, (k,), generator=g).tolist() for k in answer_len[:n]]
    width = max(map(len, seqs))
    ids = torch.tensor([[toy.PAD] * (width - len(s)) + s for s in seqs])
    labels = torch.tensor([[-100] * (width - len(s) + len(prompt)) + s[len(prompt) :] for s in seqs])
    mask = (ids != toy.PAD).long()
    imgs, _, _ = toy.make_images(n, 0.0, 0)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": toy.pixel_values(imgs)}


def test_answer_loss_equals_model_loss():
    model = toy.make_tiny_llava(0)
    batch = _labelled_batch()
    with torch.no_grad():
        full = model(**batch).loss
        short = answer_loss(model, batch)
    assert float(short) == pytest.approx(float(full), abs=1e-5)


def test_answer_loss_rejects_unlabelled_batch():
    batch = _labelled_batch()
    batch["labels"][:] = -100
    with pytest.raises(ValueError, match="no labelled tokens"):
        answer_loss(toy.make_tiny_llava(0), batch)


@pytest.mark.slow
def test_defence_removes_flagged_rows_and_refits_from_base():
    """Both fine-tunes start from a fresh base; the second one sees exactly the unflagged rows."""
    n, seed = 400, 0
    ds = toy.make_dataset(n, 0.1, seed)
    bases, seen = [], []

    def make_base():
        bases.append(toy.make_tiny_llava(seed))
        return bases[-1]

    def finetune(model, data):
        seen.append(data)
        imgs = np.stack([np.asarray(im) for im in data["image"]])
        return toy.train(model, imgs, np.asarray(data["answer"]), steps=250, seed=seed)

    res = bye_defence(
        make_base,
        finetune,
        ds,
        collate_fn=toy.collate,
        poison_column="is_poison",
        batch_size=100,
        select_config=BYESelectConfig(layer_select="top_kl:1"),
    )
    flagged = np.asarray(res.scored["bye_suspicious"])
    assert len(res.scored) == n  # the audited set keeps every row
    assert 0 < flagged.sum() < n
    assert len(bases) == 2 and res.poisoned_model is bases[0] and res.clean_model is bases[1]
    assert len(seen) == 2 and len(seen[0]) == n
    assert len(seen[1]) == len(res.clean_dataset) == n - int(flagged.sum()) == n - res.report.num_removed
    assert (
        not np.asarray(res.scored["bye_score"])[flagged].mean() > np.asarray(res.scored["bye_score"])[~flagged].mean()
    )
    # the refit saw exactly the unflagged rows, in order (the detection quality itself is asserted over five
    # seeds in test_backdoor.py: one seed of this run is not evidence either way)
    keep = ~flagged
    for column in ("answer", "is_poison"):
        assert list(seen[1][column]) == [v for v, k in zip(ds[column], keep) if k]
