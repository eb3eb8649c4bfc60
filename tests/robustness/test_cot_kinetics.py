"""CoT-Kinetics under bad input: every case gets a clear error naming the field, or correct behaviour."""

from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import hf_trust
from hf_trust.errors import HFTrustConfigError, KineticsError
from tests.conftest import make_tiny_llama

PRED = ["<think> 1 + 2 = 3 ; 3 + 4 = 7 </think> A 7"]


@pytest.fixture(scope="module")
def tok():
    words = ["<pad>", "<s>", "<think>", "</think>", "+", "=", ";", "Q", "A"] + [str(i) for i in range(10)]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>")


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
