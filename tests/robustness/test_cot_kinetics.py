"""CoT-Kinetics under bad input: every case gets a clear error naming the field, or correct behaviour."""

from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest
import torch

import hf_trust
from hf_trust.errors import HFTrustConfigError, KineticsError
from tests.conftest import make_tiny_llama, make_word_tokenizer

PRED = ["<think> 1 + 2 = 3 ; 3 + 4 = 7 </think> A 7"]


@pytest.fixture(scope="module")
def tok():
    words = ["<pad>", "<s>", "<think>", "</think>", "+", "=", ";", "Q", "A"] + [str(i) for i in range(10)]
    return make_word_tokenizer(words)


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(hf_trust.metric_path("cot_kinetics"))


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama(layers=3)


@pytest.mark.parametrize("layers", [[99], [4], [-5], [0, 99]])
def test_out_of_range_lens_layers_are_refused(metric, model, tok, layers):
    with pytest.raises(KineticsError, match=r"lens_layers contains .* states 0 … 3"):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, lens_layers=layers)


def test_negative_lens_layer_counts_from_the_end(metric, model, tok):
    last = metric.compute(predictions=PRED, model=model, tokenizer=tok, lens_layers=[-1])
    same = metric.compute(predictions=PRED, model=model, tokenizer=tok, lens_layers=[3])
    first = metric.compute(predictions=PRED, model=model, tokenizer=tok, lens_layers=[-4])
    zero = metric.compute(predictions=PRED, model=model, tokenizer=tok, lens_layers=[0])
    assert last["potential"] == same["potential"] and first["potential"] == zero["potential"]
    # a real surprisal: about log|V|/log|V| = 1 for an untrained model, never the silent 0 of a skipped lens
    assert 0.5 < last["potential"][0] < 2.0 and last["potential"] != first["potential"]


def test_lens_layers_with_beta_is_not_silently_empty(metric, model, tok):
    with pytest.raises(KineticsError, match="lens_layers is empty while beta"):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, lens_layers=[], beta=1.0)
    with pytest.raises(KineticsError, match="lens_layers must hold integers"):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, lens_layers=[1.5])


@pytest.mark.parametrize("field", ["gamma", "beta"])
@pytest.mark.parametrize("value", [math.nan, math.inf, "high"])
def test_non_finite_weights_are_refused(metric, model, tok, field, value):
    with pytest.raises(KineticsError, match=field):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, **{field: value})


@pytest.mark.parametrize("value", [math.nan, 1.0])
def test_alpha_is_refused_with_the_replacement_named(metric, model, tok, value):
    with pytest.raises(KineticsError, match="alpha=.*gamma"):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, alpha=value)


def test_nan_term_weight_is_refused(metric, model, tok):
    with pytest.raises(KineticsError, match=r"term_weights\['kinetic'\] must be finite"):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, term_weights={"kinetic": math.nan})


@pytest.mark.parametrize("bs", [0, -2, 1.5, True])
def test_bad_batch_size_is_refused(metric, model, tok, bs):
    with pytest.raises(KineticsError, match="batch_size must be a positive integer"):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, batch_size=bs)


def test_missing_local_model_id_names_the_path(metric, tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(KineticsError, match=f"model_id=.*{missing.name}.*never downloads") as info:
        metric.compute(predictions=PRED, model_id=str(missing))
    assert str(missing) in str(info.value)
    assert isinstance(info.value, HFTrustConfigError) and isinstance(info.value, ValueError)


def test_valid_edge_weights_give_finite_scores(metric, model, tok):
    for gamma in (0.0, 1.0):
        out = metric.compute(predictions=PRED, model=model, tokenizer=tok, gamma=gamma, beta=0.5)
        assert np.isfinite(out["energy"]).all()


# ---------------------------------------------------------------- sequences past the model's position limit
def _llama_16():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _gpt2_16():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=16)).eval()


LONG_PROMPT = " ".join(["Q"] + ["1 + 2 ="] * 20)  # 81 tokens


@pytest.mark.parametrize("build", [_llama_16, _gpt2_16], ids=["llama_rope", "gpt2_absolute"])
def test_sequences_past_the_position_limit_are_refused(metric, tok, build):
    """An error, not a status: past the limit a rotary model (Llama) returned energies with status "ok"
    from positions it never saw, and an absolute-position one (GPT-2) failed with a bare IndexError."""
    model = build()
    short = metric.compute(predictions=PRED, prompts=["Q"], model=model, tokenizer=tok)  # 15 tokens: fits
    assert short["segment_status"] == ["ok"] and math.isfinite(short["energy"][0])
    n = len(tok(LONG_PROMPT)["input_ids"]) + len(tok(PRED[0], add_special_tokens=False)["input_ids"])
    assert n == 96
    with pytest.raises(
        KineticsError, match=rf"sample 1 is {n} tokens .* position limit .* is 16; 1 sample\(s\) exceed"
    ):
        metric.compute(predictions=PRED * 2, prompts=["Q", LONG_PROMPT], model=model, tokenizer=tok)


# ---------------------------------------------------------------- detection labels other than 0/1
@pytest.mark.parametrize("refs", [[2, 5, 2], [1, 0, -1]])
def test_detection_references_outside_zero_one_are_refused(tok, model, refs):
    """An error: sklearn failed with "pos_label is not specified" ([2, 5, 2]) or "multiclass format is not
    supported" ([1, 0, -1]), neither naming the argument or the allowed values."""
    det = evaluate.load(hf_trust.metric_path("cot_kinetics"), "detection")
    with pytest.raises(
        KineticsError, match=r"references must be 1 \(answer correct\) or 0 \(answer wrong\).*Map your labels to 0/1"
    ):
        det.compute(predictions=PRED * 3, references=refs, model=model, tokenizer=tok)
    from hf_trust.metrics.cot_kinetics.kinetics import detection_metrics

    with pytest.raises(KineticsError, match=r"references must be 1"):
        detection_metrics([0.1, 0.5, 0.9], refs)
    # 0/1 labels go through, and agree with sklearn computed independently
    from sklearn.metrics import roc_auc_score

    assert detection_metrics([0.1, 0.5, 0.9], [0, 1, 1])["auroc"] == roc_auc_score([0, 1, 1], [0.1, 0.5, 0.9])
