"""The CoT-Kinetics demo's pieces that decide what it reports: the bootstrap interval, the verdict rule and the
chain cache key (which must change with everything that determines the chains)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hf_trust.demo.recipes.cot_kinetics import bootstrap_auroc, detection_verdict
from hf_trust.demo.studies.cot_kinetics import Chain, _read_chains, chains_cache_key
from hf_trust.fingerprint import model_identity
from tests.conftest import make_tiny_llama, make_word_tokenizer


def _tok(extra: str = ""):
    words = ["<pad>", "<s>", "1", "2", "+", "=", "\n"] + ([extra] if extra else [])
    return make_word_tokenizer(words)


def test_bootstrap_interval_equals_the_per_resample_sklearn_auroc():
    """The vectorised Mann-Whitney AUROC gives sklearn's value on every resample, ties included."""
    rng = np.random.default_rng(0)
    y = (rng.random(30) < 0.4).astype(int)
    s = np.round(rng.normal(size=30) + y, 1)  # rounded: many ties
    lo, hi = bootstrap_auroc(s, y, n=300, seed=7)
    ix = np.random.default_rng(7).integers(0, 30, (300, 30))
    vals = [roc_auc_score(y[i], s[i]) for i in ix if 0 < y[i].sum() < 30]
    assert (lo, hi) == pytest.approx((np.percentile(vals, 2.5), np.percentile(vals, 97.5)), abs=1e-12)
    assert lo < roc_auc_score(y, s) < hi


@pytest.mark.parametrize(
    ("interval", "control", "verdict"),
    [
        ((0.80, 0.90), 0.75, "reproduced"),  # the whole interval above the best baseline
        ((0.74, 0.90), 0.75, "not at this size"),  # above on average only: the interval holds the control
        ((0.39, 0.52), 0.75, "not reproduced"),  # the whole interval below the best baseline
        ((0.45, 0.49), 0.40, "not at this size"),  # above a weak baseline but not above chance
    ],
)
def test_reproduced_only_when_the_interval_excludes_the_control(interval, control, verdict):
    assert detection_verdict(interval, control) == verdict


def test_chain_cache_key_changes_with_everything_that_determines_the_chains():
    torch.manual_seed(0)
    model, tok = make_tiny_llama(), _tok()
    settings = {"max_new_tokens": 8, "batch_size": 4, "greedy": True}

    def key(m=model, t=tok, per_task=4, seed=0, s=settings):
        return chains_cache_key(model_identity(m, t), [], per_task, seed, s)

    base = key()
    assert key() == base  # deterministic
    other = make_tiny_llama()
    other.load_state_dict(model.state_dict())
    assert key(other) == base  # the same weights in another object
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight[0, 0] += 1e-3
    variants = [
        key(other),  # one weight
        key(t=_tok("3")),  # the tokenizer's vocabulary
        key(per_task=5),
        key(seed=1),
        key(s={**settings, "max_new_tokens": 9}),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_cached_chains_are_read_back_only_under_their_key(tmp_path):
    chain = Chain("t", "q", "3", [1], [2, 3], "2 3", "3", 1)
    path = tmp_path / "cot_chains-abc.json"
    path.write_text(json.dumps({"key": "abc", "chains": [chain.__dict__]}))
    assert _read_chains(path, "abc", 1) == [chain]
    assert _read_chains(path, "abc", 2) is None and not path.exists()  # wrong size: removed
    path.write_text("{not json")
    assert _read_chains(path, "abc", 1) is None and not path.exists()
    assert _read_chains(tmp_path / "missing.json", "abc", 1) is None


@pytest.mark.parametrize("prefix_len", [0, 5, 9])
def test_shared_prefix_generation_equals_generate_on_each_prompt(prefix_len):
    """Encoding the shared prefix once and repeating its cache gives the tokens ``model.generate`` gives for
    each prompt alone (greedy), with suffixes of different lengths in one batch."""
    from hf_trust.demo.studies.cot_kinetics import greedy_after_prefix, shared_prefix_length

    torch.manual_seed(3)
    # sharp attention and a short RoPE wavelength make the tokens depend on positions (at the default init a
    # wrong position offset moved the logits by 0.005 and changed no token)
    model = make_tiny_llama(vocab_size=64, hidden_size=64, layers=2, rope_theta=2.0).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for w, c in ((layer.self_attn.q_proj, 30), (layer.self_attn.k_proj, 30), (layer.self_attn.o_proj, 10)):
                w.weight.mul_(c)
            layer.mlp.down_proj.weight.mul_(10)
    shared = [5, 9, 11, 3, 7, 21, 8, 2, 30]
    prompts = [shared + [40, 41, 42], shared + [12], shared + [50, 51], shared + [13, 14, 15, 16]]
    assert shared_prefix_length(prompts) == 9
    got = greedy_after_prefix(model, prompts, prefix_len, 0, set(), 12)
    for p, new in zip(prompts, got):
        with torch.no_grad():
            ref = model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=0)
        ref = ref[0, len(p) :].tolist()  # generate stops at the model's eos; no stop tokens are given above
        assert len(ref) >= 3 and new[: len(ref)] == ref
