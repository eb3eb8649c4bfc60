"""CotKineticsConfig: one config object whose fields are the metric's settings, accepted as ``config=`` or by
field name at ``evaluate.load`` and at ``compute``; nothing else is accepted, and bad values name the field."""

from __future__ import annotations

import dataclasses

import evaluate
import pytest

import hf_trust
from hf_trust.errors import HFTrustConfigError, HFTrustTypeError, KineticsError
from hf_trust.metrics.cot_kinetics.config import FIELDS, CotKineticsConfig, from_settings
from tests.conftest import make_tiny_llama, make_word_tokenizer

PRED = ["<think> 1 + 2 = 3 ; 3 + 4 = 7 </think> A 7", "<think> 2 + 2 = 5 ; 5 + 1 = 6 </think> A 6"]


@pytest.fixture(scope="module")
def tok():
    words = ["<pad>", "<s>", "<think>", "</think>", "+", "=", ";", "Q", "A"] + [str(i) for i in range(10)]
    return make_word_tokenizer(words)


@pytest.fixture(scope="module")
def model():
    return make_tiny_llama(layers=3)


def test_config_fields_are_the_documented_settings():
    """Every field has an ``Args:`` entry in the docstring, and the defaults are the metric's defaults."""
    doc = CotKineticsConfig.__doc__
    for f in dataclasses.fields(CotKineticsConfig):
        assert f"{f.name} (`" in doc, f.name
    cfg = CotKineticsConfig()
    assert cfg.weights() == {"momentum": 0.8, "curvature": pytest.approx(0.2), "potential": 0.0}
    assert (cfg.think_start, cfg.think_end, cfg.batch_size, cfg.coe_token_set) == ("<think>", "</think>", 4, "paper")


def test_config_object_keywords_and_load_time_settings_agree(model, tok):
    kw = dict(predictions=PRED, prompts=["Q"] * 2, model=model, tokenizer=tok)
    metric = evaluate.load(hf_trust.metric_path("cot_kinetics"))
    by_config = metric.compute(**kw, config=CotKineticsConfig(gamma=0.3, lens_layers=[1], aggregation="max"))
    by_name = metric.compute(**kw, gamma=0.3, lens_layers=[1], aggregation="max")
    at_load = evaluate.load(hf_trust.metric_path("cot_kinetics"), gamma=0.3, lens_layers=[1], aggregation="max")
    loaded = at_load.compute(**kw)
    default = metric.compute(**kw)
    assert by_config["energy"] == by_name["energy"] == loaded["energy"] != default["energy"]
    assert by_config["config"] == dataclasses.asdict(CotKineticsConfig(gamma=0.3, lens_layers=[1], aggregation="max"))
    assert "potential" in loaded and "potential" not in default
    # a keyword at compute overrides the config given at load, field by field
    over = at_load.compute(**kw, gamma=0.8)
    assert over["config"]["gamma"] == 0.8 and over["config"]["lens_layers"] == [1]
    cfg_at_load = evaluate.load(hf_trust.metric_path("cot_kinetics"), config=CotKineticsConfig(gamma=0.3))
    assert cfg_at_load.compute(**kw)["config"]["gamma"] == 0.3


@pytest.mark.parametrize("name", ["alpha", "gama", "temperature"])
def test_names_that_are_not_settings_are_refused_at_compute_and_at_load(model, tok, name):
    """evaluate's EvaluationModule swallows unknown constructor keywords; the metric does not."""
    metric = evaluate.load(hf_trust.metric_path("cot_kinetics"))
    with pytest.raises(KineticsError, match=rf"{name}=0.5 is not a CoT-Kinetics setting.*gamma, beta, term_weights"):
        metric.compute(predictions=PRED, model=model, tokenizer=tok, **{name: 0.5})
    with pytest.raises(KineticsError, match=rf"{name}=0.5 is not a CoT-Kinetics setting"):
        evaluate.load(hf_trust.metric_path("cot_kinetics"), **{name: 0.5})


def test_alpha_names_the_setting_that_does_its_job():
    with pytest.raises(
        KineticsError, match="alpha=1.0 is not a CoT-Kinetics setting: weigh momentum against curvature with gamma"
    ):
        from_settings(None, {"alpha": 1.0})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gamma", 1.5, r"CotKineticsConfig.gamma must lie in \[0, 1\]"),
        ("gamma", True, r"CotKineticsConfig.gamma must be a number"),
        ("beta", float("inf"), r"CotKineticsConfig.beta must be finite"),
        ("mass", "heavy", r"CotKineticsConfig.mass must be one of \('unit', 'surprisal'\)"),
        ("aggregation", "sum", r"CotKineticsConfig.aggregation must be one of"),
        ("coe_token_set", "all", r"CotKineticsConfig.coe_token_set must be one of \('paper', 'authors_code'\)"),
        ("normalize", "yes", r"CotKineticsConfig.normalize must be True or False"),
        ("include_answer", 1, r"CotKineticsConfig.include_answer must be True or False"),
        ("think_end", None, r"CotKineticsConfig.think_end must be a string"),
        ("lens_layers", 3, r"CotKineticsConfig.lens_layers must be a list"),
        ("term_weights", ["kinetic"], r"CotKineticsConfig.term_weights must be a dict"),
        ("term_weights", {"spin": 1.0}, r"CotKineticsConfig.term_weights names an unknown term 'spin'"),
        ("batch_size", 0, r"CotKineticsConfig.batch_size must be a positive integer"),
        ("batch_size", "4", r"CotKineticsConfig.batch_size must be a positive integer"),
    ],
)
def test_bad_values_name_the_field(field, value, message):
    with pytest.raises(KineticsError, match=message) as info:
        CotKineticsConfig(**{field: value})
    assert isinstance(info.value, HFTrustConfigError) and isinstance(info.value, ValueError)


def test_replace_checks_and_keeps_the_rest():
    cfg = CotKineticsConfig(gamma=0.3, batch_size=2)
    assert cfg.replace(beta=1.0) == CotKineticsConfig(gamma=0.3, batch_size=2, beta=1.0)
    with pytest.raises(KineticsError, match="gamma must lie in"):
        cfg.replace(gamma=2.0)
    assert set(FIELDS) == set(cfg.to_dict())
    with pytest.raises(HFTrustTypeError, match="config must be a CotKineticsConfig"):
        from_settings("gamma=0.3")
