"""CoT-Kinetics metric: invariances, segments, batching, detection table, golden values, errors."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import hf_trust
from hf_trust.metrics.cot_kinetics.kinetics import (
    EnergyWeights,
    KineticsError,
    _Accumulator,
    locate_parts,
    reasoning_span,
)
from tests.conftest import make_tiny_gpt2, make_tiny_llama

WORDS = ["<pad>", "<s>", "<think>", "</think>", "<th", "ink>"] + [str(i) for i in range(10)] + ["+", "=", ";", "Q", "A"]


@pytest.fixture(scope="module")
def tok():
    vocab = {w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(60)])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>")


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(hf_trust.metric_path("cot_kinetics"))


@pytest.fixture(scope="module")
def detection():
    return evaluate.load(hf_trust.metric_path("cot_kinetics"), "detection")


def chain(rng):
    a, b = rng.integers(0, 10, 2)
    s = (a + b) % 10
    good = rng.random() < 0.5
    shown = s if good else (s + rng.integers(1, 9)) % 10
    return f"<think> {a} + {b} = {shown} </think> A {shown}", int(good)


def test_answer_edits_leave_energy_bit_identical(metric, tok):
    model = make_tiny_llama()
    preds = ["<think> 1 + 2 = 3 ; 3 + 4 = 7 </think> A 7", "<think> 1 + 2 = 3 ; 3 + 4 = 7 </think> A 9 9 9"]
    out = metric.compute(predictions=preds, prompts=["Q 1 2 4"] * 2, model=model, tokenizer=tok, batch_size=1)
    assert out["energy"][0] == out["energy"][1]
    assert out["kinetic"][0] == out["kinetic"][1] and out["potential"][0] == out["potential"][1]
    # ...but the answer-aware option does see the edit
    both = metric.compute(
        predictions=preds, prompts=["Q 1 2 4"] * 2, model=model, tokenizer=tok, batch_size=1, include_answer=True
    )
    assert both["energy"][0] != both["energy"][1]


@pytest.mark.parametrize("factory", [make_tiny_llama, make_tiny_gpt2])
def test_terms_finite_and_per_layer_contributions_vary(metric, tok, factory):
    model = factory()
    rng = np.random.default_rng(0)
    preds = [chain(rng)[0] for _ in range(4)]
    out = metric.compute(predictions=preds, prompts=["Q"] * 4, model=model, tokenizer=tok, gamma=0.5)
    for key in ("energy", "kinetic", "curvature", "potential", "confidence"):
        assert np.isfinite(out[key]).all(), key
    layers = np.asarray(out["per_layer"])
    assert layers.shape == (4, len(locate_parts(model).layers))
    assert layers.std(axis=1).min() > 0  # contributions differ across layers
    assert all(0 < c < 1 for c in out["confidence"])


def test_batching_with_left_padding_equals_one_by_one(metric, tok):
    model = make_tiny_llama()
    rng = np.random.default_rng(1)
    preds = [chain(rng)[0] + " ; w3" * int(rng.integers(0, 4)) for _ in range(5)]
    one = metric.compute(predictions=preds, prompts=["Q 5"] * 5, model=model, tokenizer=tok, batch_size=1)
    many = metric.compute(predictions=preds, prompts=["Q 5"] * 5, model=model, tokenizer=tok, batch_size=5)
    np.testing.assert_allclose(one["energy"], many["energy"], atol=1e-5)
    np.testing.assert_allclose(one["baselines"]["perplexity"], many["baselines"]["perplexity"], rtol=1e-4)


def test_token_ids_path_equals_text_path(metric, tok):
    model = make_tiny_llama()
    text = "<think> 2 + 2 = 4 </think> A 4"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    prompt = tok("Q 2 2")["input_ids"]
    a = metric.compute(predictions=[text], prompts=["Q 2 2"], model=model, tokenizer=tok)
    b = metric.compute(predictions=["ignored"], token_ids=[ids], prompt_ids=[prompt], model=model, tokenizer=tok)
    assert a["energy"] == b["energy"]


def test_kinetic_and_curvature_are_scale_invariant():
    torch.manual_seed(0)
    model = make_tiny_llama()
    parts = locate_parts(model)
    states = [torch.randn(1, 6, 32) for _ in range(4)]
    results = []
    for c in (1.0, 7.5):
        acc = _Accumulator(
            torch.zeros(6, dtype=torch.long),
            torch.arange(6),
            torch.zeros(6, dtype=torch.long),
            parts,
            EnergyWeights(),
            lens_layers=set(),
        )
        for h in states:
            acc.observe(h * c, [torch.arange(6)])
        results.append(acc.finish(torch.ones(6)))
    torch.testing.assert_close(results[0]["kinetic"], results[1]["kinetic"])
    torch.testing.assert_close(results[0]["curvature"], results[1]["curvature"])


def test_segment_edge_cases(tok):
    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    start, end = enc("<think>"), enc("</think>")
    prompt = enc("Q <think> 1")  # the prompt mentions the delimiter: ignored
    out = enc("<think> 1 + 2 </think> A 3")
    assert reasoning_span(prompt + out, len(prompt), start, end) == (len(prompt) + 1, len(prompt) + 4, "ok")
    truncated = enc("<think> 1 + 2 = 3 ; 4")
    first, last, status = reasoning_span(prompt + truncated, len(prompt), start, end)
    assert status == "no_think_end" and last == len(prompt) + len(truncated)
    multi_start, multi_end = enc("<th ink>"), enc("; ;")  # delimiters of several tokens
    seq = enc("Q") + enc("<th ink> 5 + 5 ; ; A 0")
    assert reasoning_span(seq, 1, multi_start, multi_end) == (3, 6, "ok")
    assert reasoning_span(enc("Q 1 2"), 1, start, end)[2] == "no_delimiters"


def test_random_model_detects_at_chance(detection, tok):
    model = make_tiny_llama()
    rng = np.random.default_rng(2)
    data = [chain(rng) for _ in range(60)]
    out = detection.compute(
        predictions=[p for p, _ in data],
        references=[y for _, y in data],
        prompts=["Q"] * 60,
        model=model,
        tokenizer=tok,
        batch_size=20,
    )
    assert abs(out["auroc"] - 0.5) < 0.2
    table = out["detection_table"]
    assert set(table) == {"cot_kinetics", "maxprob", "perplexity", "entropy", "coe_r", "coe_c"}
    assert out["n"] == 60 and 0 <= out["fpr_at_95"] <= 1
    energy = np.asarray(out["energy"])
    for name, col in out["baselines"].items():  # the energy is not a relabelled baseline
        assert abs(np.corrcoef(energy, col)[0, 1]) < 0.999, name


def test_golden_values_on_a_saved_tiny_model(tmp_path, metric, tok):
    model = make_tiny_llama()
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    out = metric.compute(
        predictions=["<think> 3 + 4 = 7 ; 7 + 1 = 8 </think> A 8"], prompts=["Q 3 4 1"], model_id=str(tmp_path / "tiny")
    )
    # pinned on this implementation of the reconstructed energy (tiny Llama, seed 0)
    np.testing.assert_allclose(out["energy"][0], GOLDEN["energy"], rtol=1e-5)
    np.testing.assert_allclose(out["kinetic"][0], GOLDEN["kinetic"], rtol=1e-5)
    np.testing.assert_allclose(out["potential"][0], GOLDEN["potential"], rtol=1e-5)


GOLDEN = {"energy": 1.2277537912662406, "kinetic": 0.22215527823311845, "potential": 1.0055985130331224}


def test_clear_errors(metric, detection, tok):
    model = make_tiny_llama()
    with pytest.raises(KineticsError, match="one prompt per prediction"):
        metric.compute(predictions=["<think> 1 </think>"], prompts=["Q", "Q"], model=model, tokenizer=tok)
    with pytest.raises(KineticsError, match="empty strings"):
        metric.compute(predictions=[""], model=model, tokenizer=tok)
    with pytest.raises(KineticsError, match="tokenizes to nothing"):
        metric.compute(predictions=["<think> 1 </think>"], model=model, tokenizer=tok, think_end="   ")
    with pytest.raises(KineticsError, match="causal language model"):
        metric.compute(predictions=["<think> 1 </think>"], model=torch.nn.Linear(2, 2), tokenizer=tok)
    with pytest.raises(KineticsError, match="model_id"):
        metric.compute(predictions=["<think> 1 </think>"])
    with pytest.raises(KineticsError, match="both correct"):
        detection.compute(predictions=["<think> 1 </think> A 1"] * 2, references=[1, 1], model=model, tokenizer=tok)
