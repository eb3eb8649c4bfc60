"""Entropy capture on a tiny LLaVA built from configs (spec e: range, invariance, hook path, errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_trust.errors import HFTrustError
from hf_trust.filters import BYEFilter, image_attention_entropy
from hf_trust.filters.capture import capture_rows

from . import toy


@pytest.fixture(scope="module")
def model():
    return toy.make_tiny_llava(seed=0)


@pytest.fixture(scope="module")
def ds():
    return toy.make_dataset(48, 0.1, seed=0)


def _inputs(ds):
    return toy.collate(ds["image"], ds["question"])


def test_entropy_in_range_and_shape(model, ds):
    bye = BYEFilter(model, collate_fn=toy.collate, batch_size=16)
    E = np.asarray(bye.entropies(ds)["bye_layer_entropy"])
    assert E.shape == (len(ds), 4)
    assert (E >= 0).all() and (E <= math.log(toy.N_V) + 1e-6).all()
    assert E.std() > 0  # not a constant


def test_hook_path_equals_output_attentions(model, ds):
    inputs = _inputs(ds.select(range(8)))
    img = inputs["input_ids"] == toy.IMAGE_TOKEN
    with torch.no_grad():
        with capture_rows(model, inputs["attention_mask"]) as cap:
            out = model(**inputs, output_attentions=True)
    for l, att in enumerate(out.attentions):
        ref = image_attention_entropy(att[:, :, -1, :].float().mean(1), img)
        hook = image_attention_entropy(cap.rows[l], img)
        torch.testing.assert_close(hook, ref, atol=1e-6, rtol=0)


def test_left_padding_uses_last_real_token(model, ds):
    inputs = _inputs(ds.select(range(4)))
    pad = torch.full((4, 3), toy.PAD)
    padded = {
        "input_ids": torch.cat([pad, inputs["input_ids"]], 1),
        "attention_mask": torch.cat([torch.zeros_like(pad), inputs["attention_mask"]], 1),
        "pixel_values": inputs["pixel_values"],
    }
    outs = []
    for inp in (inputs, padded):
        with torch.no_grad(), capture_rows(model, inp["attention_mask"]) as cap:
            model(**inp)
        outs.append(torch.stack([image_attention_entropy(r, inp["input_ids"] == toy.IMAGE_TOKEN) for r in cap.rows]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)


def test_permutation_invariance_over_image_columns():
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(5, 30, generator=g)
    mask = torch.zeros(5, 30, dtype=torch.bool)
    mask[:, 4:20] = True
    perm = torch.arange(30)
    perm[4:20] = 4 + torch.randperm(16, generator=g)
    torch.testing.assert_close(image_attention_entropy(rows, mask), image_attention_entropy(rows[:, perm], mask))
    # text-token mass is dropped: changing it does not move the entropy
    rows2 = rows.clone()
    rows2[:, :4] *= 7
    torch.testing.assert_close(image_attention_entropy(rows, mask), image_attention_entropy(rows2, mask))
    uniform = torch.ones(1, 30)
    assert image_attention_entropy(uniform, mask[:1]).item() == pytest.approx(math.log(16), abs=1e-6)
    onehot = torch.zeros(1, 30)
    onehot[0, 7] = 1
    assert image_attention_entropy(onehot, mask[:1]).item() == pytest.approx(0.0, abs=1e-6)


def test_random_model_shows_no_collapse(model):
    ds = toy.make_dataset(160, 0.1, seed=3)
    bye = BYEFilter(model, collate_fn=toy.collate, poison_column="is_poison", batch_size=80)
    scored = bye.score(ds)
    rep = bye.report_
    # No learned collapse: no layer passes the bimodality rule and nothing is removed.  (The white patch is
    # salient even untrained, so layer-0 AUROC is not 0.5 here; the rule, not the AUROC, is what must hold.)
    assert rep.status == "no_sensitive_layers" and rep.removed_fraction == 0.0
    assert max(rep.layer_auroc) < 0.95
    assert len(scored) == len(ds) and {"bye_layer_entropy", "bye_score", "bye_suspicious"} <= set(scored.column_names)


def test_sdpa_is_refused(ds):
    m = toy.make_tiny_llava(seed=0)
    m.set_attn_implementation("sdpa")
    with pytest.raises(HFTrustError, match="eager"):
        BYEFilter(m, collate_fn=toy.collate)


def test_model_without_image_token_is_refused():
    m = toy.make_tiny_llava(seed=0)
    m.config.image_token_id = None
    if hasattr(m.config, "image_token_index"):
        try:
            m.config.image_token_index = None
        except Exception:
            pass
    with pytest.raises(HFTrustError, match="image_token_id"):
        BYEFilter(m, collate_fn=toy.collate)


def test_bad_datasets_are_refused(model, ds):
    bye = BYEFilter(model, collate_fn=toy.collate)
    with pytest.raises(HFTrustError, match="images column 'image'"):
        bye(ds.remove_columns("image"))
    with pytest.raises(HFTrustError, match="questions column"):
        bye(ds.remove_columns("question"))
    with pytest.raises(HFTrustError, match="empty"):
        bye(ds.select([]))
    with pytest.raises(HFTrustError, match="no image token"):
        BYEFilter(model, collate_fn=lambda im, q: {"input_ids": torch.ones(len(im), 5, dtype=torch.long)}).entropies(ds)
    with pytest.raises(HFTrustError, match="processor"):
        BYEFilter(model)


def test_fingerprint_is_explicit_and_cache_is_reused(model, ds, tmp_path):
    """Same weights, same prompt (named by ``collate_fingerprint``), same data: served from the cache file.

    16 rows at batch 8 would call the collate function on 2 batches; a cache hit calls it once, for the
    first-batch spot check that verifies what the cache returned.
    """
    from datasets import load_from_disk

    ds.select(range(16)).save_to_disk(str(tmp_path / "d"))
    disk = load_from_disk(str(tmp_path / "d"))
    first = BYEFilter(model, collate_fn=toy.collate, collate_fingerprint="toy-prompt").entropies(disk)
    calls = []

    def counting(im, q):
        calls.append(len(im))
        return toy.collate(im, q)

    again = BYEFilter(model, collate_fn=counting, collate_fingerprint="toy-prompt").entropies(disk)
    assert calls == [8]  # only the spot check ran the model
    assert again["bye_layer_entropy"] == first["bye_layer_entropy"]
    other = toy.make_tiny_llava(seed=1)
    bye = BYEFilter(model, collate_fn=toy.collate)
    assert BYEFilter(other, collate_fn=toy.collate).fingerprint(disk) != bye.fingerprint(disk)
