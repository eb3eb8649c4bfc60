"""``BYESelectConfig``: one object holds the selection settings for ``bye_select``, ``BYEFilter`` and the report."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from hf_trust.errors import HFTrustConfigError, HFTrustTypeError
from hf_trust.filters import BYEFilter, BYEReport, BYESelectConfig, bye_select

from . import toy

#: A value other than the default for every field (each valid on its own).
OTHER = {
    "layer_select": "robust",
    "k_sigma": 3.0,
    "bsi_threshold": 2.5,
    "max_minority": 0.3,
    "agreement": 0.6,
    "min_support": 2,
    "require_minor_low_component": True,
    "max_removal_fraction": None,
    "warn_if_removal_concentrated": 0.8,
    "min_rows": 1,
}


def _matrix(seed: int = 0, n: int = 200) -> np.ndarray:
    """Layer 1 holds a 10 % low-entropy minority; the other layers are unimodal noise."""
    rng = np.random.default_rng(seed)
    E = rng.normal(2.2, 0.15, (n, 3))
    E[: n // 10, 1] = rng.normal(0.7, 0.1, n // 10)
    return E


def test_other_values_cover_every_field():
    assert set(OTHER) == {f.name for f in dataclasses.fields(BYESelectConfig)}


def test_round_trip_through_json_and_the_report():
    cfg = BYESelectConfig(**OTHER)
    assert BYESelectConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    listed = BYESelectConfig(layer_select=[2, 0])
    assert listed.layer_select == (0, 2) and listed.to_dict()["layer_select"] == [0, 2]
    assert BYESelectConfig.from_dict(json.loads(json.dumps(listed.to_dict()))) == listed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep, _ = bye_select(_matrix(), cfg)
    assert rep.params == cfg.to_dict() and rep.select_config == cfg
    assert BYEReport(**json.loads(json.dumps(rep.to_dict()))).select_config == cfg


def test_a_report_written_before_the_config_reads_back():
    """Saved reports also hold ``direction="low"``, the one value that key ever took."""
    old = {**BYESelectConfig().to_dict(), "direction": "low"}
    assert BYESelectConfig.from_dict(old) == BYESelectConfig()
    with pytest.raises(HFTrustConfigError, match="direction"):
        BYESelectConfig.from_dict({**old, "direction": "high"})
    with pytest.raises(HFTrustConfigError, match=r"\['k_sgima'\] are not BYESelectConfig fields"):
        BYESelectConfig.from_dict({"k_sgima": 2.0})


@pytest.mark.parametrize("field", sorted(OTHER))
def test_fingerprint_changes_with_every_field(field):
    base = BYESelectConfig()
    assert base.fingerprint() == BYESelectConfig().fingerprint()
    assert base.replace(**{field: OTHER[field]}).fingerprint() != base.fingerprint()


def test_config_is_frozen_and_replace_checks_the_new_value():
    cfg = BYESelectConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k_sigma = 3.0  # type: ignore[misc]
    with pytest.raises(HFTrustConfigError, match="k_sigma"):
        cfg.replace(k_sigma=-1.0)


def test_the_config_decides_the_selection():
    """The same matrix under two configs: the config passed is the one applied (layers and rows)."""
    E = _matrix()
    ref, _ = bye_select(E, BYESelectConfig(layer_select=[0]))
    pinned, _ = bye_select(E, BYESelectConfig(layer_select=[1]))
    assert ref.sensitive_layers == [0] and pinned.sensitive_layers == [1]
    assert np.asarray(pinned.suspicious)[: len(E) // 10].all() and sum(pinned.suspicious) == len(E) // 10


@pytest.mark.parametrize("kwargs", [{"layer_select": "robust"}, {"min_rows": 1, "k_sigma": 3.0}])
def test_loose_selection_keywords_show_the_config_to_pass(kwargs):
    E = _matrix()
    with pytest.raises(HFTrustConfigError, match=r"bye_select\(\) takes the selection settings as one BYESelectConfig"):
        bye_select(E, **kwargs)
    model = toy.make_tiny_llava(seed=0)
    with pytest.raises(HFTrustConfigError, match=r"select_config=BYESelectConfig\(") as info:
        BYEFilter(model, collate_fn=toy.collate, **kwargs)
    for key in kwargs:
        assert key in str(info.value)


@pytest.mark.parametrize("name", ["direction", "head_reduce", "query"])
def test_fixed_choices_are_not_arguments(name):
    model = toy.make_tiny_llava(seed=0)
    with pytest.raises(HFTrustConfigError, match=rf"takes no {name} argument"):
        BYEFilter(model, collate_fn=toy.collate, **{name: "anything"})
    with pytest.raises(HFTrustConfigError, match=rf"takes no {name} argument"):
        bye_select(_matrix(), **{name: "anything"})


def test_unknown_keyword_and_wrong_config_type():
    with pytest.raises(HFTrustTypeError, match="unexpected keyword"):
        bye_select(_matrix(), layer_selct="robust")
    with pytest.raises(HFTrustTypeError, match="BYESelectConfig.from_dict"):
        bye_select(_matrix(), {"layer_select": "robust"})  # type: ignore[arg-type]


def test_filter_report_carries_its_config():
    model = toy.make_tiny_llava(seed=0)
    ds = toy.make_dataset(24, 0.1, seed=0)
    cfg = BYESelectConfig(layer_select=[0, 1], min_rows=1)
    bye = BYEFilter(model, collate_fn=toy.collate, batch_size=24, select_config=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bye.score(ds)
    assert bye.report_.select_config == cfg and bye.report_.sensitive_layers == [0, 1]


def test_study_rules_fingerprint_follows_the_configs():
    """The sweep's cached per-rule summaries are named by this digest: a changed rule config is a new name."""
    from hf_trust.demo.studies import bye as study

    base = study.rules_fingerprint()
    assert study.rules_fingerprint(dict(study.RULES)) == base
    changed = {**study.RULES, "robust": study.RULES["robust"].replace(max_minority=0.3)}
    assert study.rules_fingerprint(changed) != base
    renamed = {("ref" if k == "reference" else k): v for k, v in study.RULES.items()}
    assert study.rules_fingerprint(renamed) != base
