"""BYE under bad input, non-finite entropies, stale caches, interrupted writes and caller objects."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from hf_trust.errors import HFTrustCacheError, HFTrustConfigError, HFTrustDataError
from hf_trust.filters import BYEFilter, BYEReport, BYESelectConfig, bye_select
from tests.bye import toy

torch.set_num_threads(1)


def _golden(seed: int = 0, n: int = 300, L: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Layer 2 collapses for the first 30 rows; the other layers are unimodal noise."""
    rng = np.random.default_rng(seed)
    poison = np.zeros(n, dtype=bool)
    poison[:30] = True
    E = rng.normal(2.3, 0.15, (n, L))
    E[poison, 2] = rng.normal(0.8, 0.1, poison.sum())
    return E, poison


@pytest.fixture(scope="module")
def model():
    return toy.make_tiny_llava(seed=0)


@pytest.fixture(scope="module")
def ds():
    return toy.make_dataset(24, 0.1, seed=0)


# ---------------------------------------------------------------- configuration values
@pytest.mark.parametrize(
    "field, value",
    [
        ("max_removal_fraction", -0.1),
        ("max_removal_fraction", 0.0),
        ("max_removal_fraction", 1.5),
        ("max_removal_fraction", float("nan")),
        ("k_sigma", -1),
        ("k_sigma", 0),
        ("k_sigma", float("nan")),
        ("k_sigma", float("inf")),
        ("bsi_threshold", -2.0),
        ("max_minority", 1.0),
        ("max_minority", 0),
        ("agreement", 0.0),
        ("warn_if_removal_concentrated", 2),
        ("layer_select", "top_kl:0"),
        ("layer_select", "nonsense"),
        ("layer_select", []),
        ("layer_select", [0, -1]),
        ("min_rows", 0),
    ],
)
def test_out_of_range_selection_config_names_the_field(field, value):
    with pytest.raises(HFTrustConfigError, match=field):
        BYESelectConfig(**{field: value})


def test_negative_cap_no_longer_removes_ninety_percent():
    E, _ = _golden()
    with pytest.raises(HFTrustConfigError, match="max_removal_fraction"):
        bye_select(E, BYESelectConfig(max_removal_fraction=-0.1))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"eps": -1.0}, "eps"),
        ({"layers": [7]}, "layers"),
        ({"layers": [0, -1]}, "layers"),
        ({"layers": "first"}, "layers"),
        ({"select_config": {"layer_select": "robust"}}, "select_config must be a BYESelectConfig"),
    ],
)
def test_filter_rejects_bad_config_at_construction(model, kwargs, field):
    with pytest.raises(HFTrustConfigError, match=field):
        BYEFilter(model, collate_fn=toy.collate, **kwargs)


def test_layers_out_of_range_message_names_the_model_depth(model):
    with pytest.raises(HFTrustConfigError, match=r"outside the 4 decoder layers .*0\.\.3"):
        BYEFilter(model, collate_fn=toy.collate, layers=[7])


def test_none_image_is_a_clear_error(model, ds):
    from datasets import Dataset
    from PIL import Image

    imgs, _, _ = toy.make_images(8, 0.0, 0)
    images = [Image.fromarray(i) for i in imgs]
    images[5] = None
    bad = Dataset.from_dict({"image": images, "question": ["what?"] * 8})
    with pytest.raises(HFTrustDataError, match=r"rows \[5\] have no image .*'image'"):
        BYEFilter(model, collate_fn=toy.collate, batch_size=4).entropies(bad)


# ---------------------------------------------------------------- non-finite entropies
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("layer_select", ["bimodal", "robust"])
def test_one_nonfinite_entropy_does_not_hide_the_collapse_layer(bad, layer_select):
    E, poison = _golden()
    E[7, 0] = bad  # a clean row, another layer
    E[3, 2] = bad  # a poisoned row, in the collapse layer itself
    with pytest.warns(UserWarning, match="NaN or infinite"):
        rep, _ = bye_select(E, BYESelectConfig(layer_select=layer_select))
    assert rep.sensitive_layers == [2]
    assert rep.nonfinite_rows == [3, 7]
    flagged = np.asarray(rep.suspicious)
    assert flagged[poison & (np.arange(len(E)) != 3)].all()  # every other poisoned row is still found
    assert not flagged[~poison].any()


def test_all_nonfinite_layer_is_a_data_error():
    E, _ = _golden()
    E[:, 1] = np.inf
    with pytest.raises(HFTrustDataError, match=r"layer\(s\) \[1\]"):
        bye_select(E)


# ---------------------------------------------------------------- the entropy cache key
def test_two_lambdas_do_not_share_a_cache_key(model, ds):
    a = BYEFilter(model, collate_fn=lambda im, q: toy.collate(im, q))
    b = BYEFilter(model, collate_fn=lambda im, q: {**toy.collate(im, q), "pixel_values": toy.pixel_values(im) * 0})
    assert a.collate_fn.__qualname__ == b.collate_fn.__qualname__  # what the old key used
    assert a.fingerprint(ds) != b.fingerprint(ds)


def test_closure_values_enter_the_cache_key(model, ds):
    def make(scale):
        return lambda im, q: {**toy.collate(im, q), "pixel_values": toy.pixel_values(im) * scale}

    assert BYEFilter(model, collate_fn=make(1.0)).fingerprint(ds) != BYEFilter(model, collate_fn=make(0.5)).fingerprint(
        ds
    )
    assert BYEFilter(model, collate_fn=make(1.0)).fingerprint(ds) == BYEFilter(model, collate_fn=make(1.0)).fingerprint(
        ds
    )


def test_processor_chat_template_and_data_enter_the_cache_key(model, ds):
    from tests.bye.test_processor import make_processor

    p1 = make_processor()
    p2 = make_processor(template=p1.chat_template.replace("Q A", "A"))
    assert BYEFilter(model, p1).fingerprint(ds) != BYEFilter(model, p2).fingerprint(ds)
    assert BYEFilter(model, p1).fingerprint(ds) == BYEFilter(model, make_processor()).fingerprint(ds)
    other = toy.make_dataset(24, 0.1, seed=1)
    assert BYEFilter(model, p1).fingerprint(ds) != BYEFilter(model, p1).fingerprint(other)


class _Unhashable:
    """A collate callable that ``datasets`` cannot hash (it holds a generator)."""

    def __init__(self):
        self.pending = (i for i in range(3))

    def __call__(self, images, questions):
        return toy.collate(images, questions)


def test_unidentifiable_callable_is_not_cached(model, ds, tmp_path):
    from datasets import load_from_disk

    ds.save_to_disk(str(tmp_path / "d"))
    disk = load_from_disk(str(tmp_path / "d"))
    before = set(os.listdir(tmp_path / "d"))
    bye = BYEFilter(model, collate_fn=_Unhashable(), batch_size=8)
    assert bye.fingerprint(disk) is None
    with pytest.warns(UserWarning, match="not cached"):
        out = bye.entropies(disk)
    assert set(os.listdir(tmp_path / "d")) == before  # no cache file written
    ref = BYEFilter(model, collate_fn=toy.collate, batch_size=8).entropies(ds)
    np.testing.assert_allclose(np.asarray(out["bye_layer_entropy"]), np.asarray(ref["bye_layer_entropy"]), atol=1e-6)


def test_stale_cache_is_detected_on_read_and_recomputed(ds, tmp_path):
    """Two different models under the same user-given fingerprint: the cache must not hand back the first
    model's entropies for the second."""
    from datasets import load_from_disk

    ds.save_to_disk(str(tmp_path / "d"))
    disk = load_from_disk(str(tmp_path / "d"))
    m0, m1 = toy.make_tiny_llava(seed=0), toy.make_tiny_llava(seed=0)
    with torch.no_grad():  # sharpen m1's attention: a freshly initialised model attends almost uniformly
        for layer in m1.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(20.0)
            layer.self_attn.k_proj.weight.mul_(20.0)
    first = BYEFilter(m0, collate_fn=toy.collate, fingerprint="same", batch_size=8).entropies(disk)
    with pytest.warns(UserWarning, match="do not match a fresh forward pass"):
        second = BYEFilter(m1, collate_fn=toy.collate, fingerprint="same", batch_size=8).entropies(disk)
    fresh = BYEFilter(m1, collate_fn=toy.collate, batch_size=8).entropies(ds)  # in memory: never cached
    np.testing.assert_allclose(
        np.asarray(second["bye_layer_entropy"]), np.asarray(fresh["bye_layer_entropy"]), atol=1e-6
    )
    assert not np.allclose(np.asarray(first["bye_layer_entropy"]), np.asarray(second["bye_layer_entropy"]))


# ---------------------------------------------------------------- reports
def test_report_save_is_atomic(tmp_path, monkeypatch):
    E, _ = _golden()
    rep, _ = bye_select(E)
    path = tmp_path / "report.json"
    rep.save(path)
    old = path.read_text()
    rep2, _ = bye_select(E, BYESelectConfig(layer_select="robust"))

    def crash(*_a, **_k):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr("hf_trust.atomic.os.replace", crash)
    with pytest.raises(OSError, match="simulated"):
        rep2.save(path)
    monkeypatch.undo()
    assert path.read_text() == old  # the previous complete report is intact
    assert sorted(os.listdir(tmp_path)) == ["report.json"]  # no half-written temporary left behind
    assert BYEReport.load(path).suspicious == rep.suspicious


def test_truncated_report_is_a_cache_error(tmp_path):
    E, _ = _golden()
    rep, _ = bye_select(E)
    path = rep.save(tmp_path / "r.json")
    path.write_text(path.read_text()[:100])
    with pytest.raises(HFTrustCacheError, match="not a complete BYE report"):
        BYEReport.load(path)


def test_report_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    E, _ = _golden()
    rep, scores = bye_select(E)
    out = rep.plot(tmp_path / "r.png", scores=scores)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == before


# ---------------------------------------------------------------- caller objects
def test_filter_restores_tokenizer_padding_side_and_model_mode(ds):
    from tests.bye.test_processor import QUESTIONS, make_processor

    proc = make_processor()
    proc.tokenizer.padding_side = "right"
    model = toy.make_tiny_llava(seed=0)
    model.train()
    sub = ds.select(range(len(QUESTIONS))).remove_columns("question").add_column("question", QUESTIONS)
    BYEFilter(model, proc, batch_size=4).entropies(sub)
    assert proc.tokenizer.padding_side == "right"
    assert model.training


def test_padding_side_restored_even_when_the_processor_fails(ds):
    from tests.bye.test_processor import make_processor

    proc = make_processor()
    proc.tokenizer.padding_side = "right"
    bye = BYEFilter(toy.make_tiny_llava(seed=0), proc, batch_size=4)
    with pytest.raises(Exception):  # noqa: B017 - whatever the processor raises on a non-image
        bye.entropy_batch(["not an image"], ["what ?"])
    assert proc.tokenizer.padding_side == "right"


# ---------------------------------------------------------------- decisions asserted, not recorded
def test_clean_data_keeps_almost_every_row_with_the_robust_rule():
    """Unimodal clean entropies plus majority-low structure: at most 5 % removed, status 'ok' or none."""
    rng = np.random.default_rng(4)
    n = 400
    kind = rng.random(n) < 0.65
    E = np.stack([np.where(kind, rng.normal(1.5, 0.1, n), rng.normal(2.6, 0.1, n)), rng.normal(2.2, 0.2, n)], axis=1)
    rep, _ = bye_select(E, BYESelectConfig(layer_select="robust"))
    assert rep.removed_fraction <= 0.05
    assert rep.num_removed == int(np.sum(rep.suspicious)) and math.isfinite(rep.removed_fraction)


def test_report_json_has_status_and_per_class_share(tmp_path):
    E, poison = _golden()
    labels = np.where(poison, "target", "clean")
    rep, _ = bye_select(E, labels=labels)
    data = json.loads(rep.save(tmp_path / "r.json").read_text())
    assert data["status"] == "ok"
    assert data["removed_share_per_class"] == {"clean": 0.0, "target": 1.0}


# ---------------------------------------------------------------- too few rows, non-numeric entropies
@pytest.mark.parametrize("n", [2, 5, 20, 40])
def test_too_few_rows_removes_nothing_unless_lifted(n):
    """Legal but unreliable input, so a status and a warning rather than an error: on pure noise (no
    poison) the rule used to remove rows with status "ok" (n = 20: 6 of 10 seeds, 15-40 % of the rows;
    n = 2: one row of two).  Below ``min_rows`` (50) nothing is removed, the diagnostics stay; ``min_rows=1``
    gives back exactly what the rule flags."""
    removed_when_lifted = 0
    for seed in range(10):
        E = np.random.default_rng(seed).normal(2.3, 0.15, (n, 6))
        with pytest.warns(UserWarning, match=rf"BYE got {n} rows, fewer than min_rows=50.*min_rows=1"):
            rep, scores = bye_select(E)
        assert rep.status == "too_few_rows" and not any(rep.suspicious) and rep.removed_fraction == 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lifted, lifted_scores = bye_select(E, BYESelectConfig(min_rows=1))
        assert lifted.status != "too_few_rows"
        # the guard changes the decision only: the layer statistics and scores are the same
        assert rep.sensitive_layers == lifted.sensitive_layers and rep.layer_bsi == lifted.layer_bsi
        np.testing.assert_array_equal(scores, lifted_scores)
        removed_when_lifted += any(lifted.suspicious)
    if n <= 20:
        assert removed_when_lifted >= 3  # what the guard prevents: removals from pure noise (measured: 6-10 of 10)


def test_from_fifty_rows_the_guard_is_silent():
    """At and above ``min_rows`` the selection is unchanged (no status, no warning of its own)."""
    for seed in range(5):
        E = np.random.default_rng(seed).normal(2.3, 0.15, (50, 6))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rep, _ = bye_select(E)
        assert rep.status in ("ok", "no_sensitive_layers") and rep.params["min_rows"] == 50


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "50"])
def test_bad_min_rows_names_the_field(value):
    with pytest.raises(HFTrustConfigError, match=r"min_rows must be an integer ≥ 1"):
        bye_select(np.ones((60, 3)), BYESelectConfig(min_rows=value))


def test_string_entropies_are_a_data_error():
    """An error: numpy's "could not convert string to float" named neither the argument nor the fix."""
    with pytest.raises(HFTrustDataError, match=r"entropies must be an \(N, L\) matrix of numbers.*not strings"):
        bye_select([["a", "b"], ["c", "d"]])
    with pytest.raises(HFTrustDataError, match=r"entropies must be an \(N, L\) matrix of numbers"):
        bye_select([[1.0, 2.0], [3.0]])  # ragged rows
