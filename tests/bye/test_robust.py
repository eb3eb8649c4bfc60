"""``layer_select="robust"`` and the guard rails every selection mode shares (synthetic entropy matrices)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hf_trust.filters import BYESelectConfig, bye_select


def _structured(seed: int, n: int = 500, poison_rate: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layers 0-3: clean structure, bimodal with a LOW-entropy MAJORITY (70 % of the images are one "type");
    layer 4: a minority collapse (the poisoned rows); layer 5: unimodal noise.  Returns (E, poison, image type)."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n) < 0.7  # the majority image type attends more narrowly in the structure layers
    poison = np.zeros(n, dtype=bool)
    poison[rng.permutation(n)[: int(round(poison_rate * n))]] = True
    E = np.empty((n, 6))
    for l in range(4):
        E[:, l] = np.where(kind, rng.normal(1.4 + 0.1 * l, 0.08, n), rng.normal(2.5, 0.08, n))
    E[:, 4] = np.where(poison, rng.normal(0.6, 0.15, n), rng.normal(2.3, 0.15, n))
    E[:, 5] = rng.normal(2.0, 0.2, n)
    return E, poison, kind


def _prf(flagged, poison) -> tuple[float, float]:
    flagged, poison = np.asarray(flagged, bool), np.asarray(poison, bool)
    tp = (flagged & poison).sum()
    return tp / max(flagged.sum(), 1), tp / max(poison.sum(), 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_finds_minority_collapse_among_majority_structure(seed):
    E, poison, _ = _structured(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference rule's capped-removal warning
        ref, _ = bye_select(E)
    rob, _ = bye_select(E, BYESelectConfig(layer_select="robust"))
    p, r = _prf(rob.suspicious, poison)
    assert rob.status == "ok" and rob.sensitive_layers == [4]
    assert p >= 0.9 and r >= 0.9
    # the reference rule averages the bimodal structure layers with the collapse layer and misses the poison
    assert 4 in ref.sensitive_layers and len(ref.sensitive_layers) > 1
    p_ref, r_ref = _prf(ref.suspicious, poison)
    assert p_ref < 0.5
    # robust rejects the structure layers because their low component is a majority, not for lack of separation
    for l in range(4):
        assert ref.layer_bsi[l] >= 2.0 and ref.layer_gmms[l]["weights"][0] > 0.5


@pytest.mark.parametrize("seed", range(5))
def test_robust_on_clean_majority_structure_removes_almost_nothing(seed):
    E, _, _ = _structured(seed, poison_rate=0.0)
    rob, _ = bye_select(E, BYESelectConfig(layer_select="robust"))
    assert rob.removed_fraction <= 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, _ = bye_select(E)
    assert ref.removed_fraction >= 0.25  # the reference removes a whole image type (or is capped)


def test_robust_layer_bsi_is_ashmans_d_of_each_layer_gmm():
    E, _, _ = _structured(0)
    rep, _ = bye_select(E, BYESelectConfig(layer_select="robust"))
    for l, g in enumerate(rep.layer_gmms):
        (m0, m1), (s0, s1) = g["means"], g["stds"]
        assert rep.layer_bsi[l] == pytest.approx(math.sqrt(2) * abs(m1 - m0) / math.sqrt(s0**2 + s1**2))


def test_bsi_rule_keeps_layers_whose_separation_index_clears_the_threshold():
    """The ``"bsi"`` rule (our reconstruction: Ashman's D ≥ ``bsi_threshold``; not in the released code) selects
    exactly the layers whose index clears the threshold, and none when the threshold is out of reach."""
    E, _, _ = _structured(0)
    rep, _ = bye_select(E, BYESelectConfig(layer_select="bsi", max_removal_fraction=None))
    assert rep.sensitive_layers == [l for l, b in enumerate(rep.layer_bsi) if b >= 2.0]
    rep3, _ = bye_select(E, BYESelectConfig(layer_select="bsi", bsi_threshold=1e6))
    assert rep3.status == "no_sensitive_layers" and rep3.removed_fraction == 0.0


def test_majority_flagged_is_never_silent():
    E, _, kind = _structured(0, poison_rate=0.0)
    with pytest.warns(UserWarning, match="majority"):
        rep, _ = bye_select(E, BYESelectConfig(max_removal_fraction=None))
    assert rep.status == "majority_flagged" and rep.removed_fraction > 0.5
    assert any("majority" in w for w in rep.warnings)
    with pytest.warns(UserWarning, match="max_removal_fraction"):
        capped, scores = bye_select(E)  # default cap 0.5
    assert capped.status == "capped" and capped.num_removed == math.floor(0.5 * len(E))
    # the capped rows are the lowest-scoring of those the rule flagged
    flagged = np.asarray(capped.suspicious)
    assert scores[flagged].max() <= scores[~flagged & np.asarray(rep.suspicious)].min()


def test_removed_share_per_class_matches_a_recount():
    E, poison, kind = _structured(1)
    labels = np.where(poison, "target", np.where(kind, "a", "b"))
    rep, _ = bye_select(E, BYESelectConfig(layer_select="robust"), labels=labels)
    flagged = np.asarray(rep.suspicious)
    for k in ("a", "b", "target"):
        assert rep.removed_share_per_class[k] == pytest.approx(flagged[labels == k].mean())
    assert rep.removed_share_per_class["target"] >= 0.9 and rep.removed_share_per_class["a"] <= 0.05


def test_filter_forwards_the_robust_rule_and_its_parameters():
    """``BYEFilter(..., select_config=BYESelectConfig(layer_select="robust"))`` runs the same selection as ``bye_select`` on its entropies."""
    from hf_trust.filters import BYEFilter

    from . import toy

    model = toy.make_tiny_llava(seed=0)
    ds = toy.make_dataset(48, 0.1, seed=0)
    # min_rows=1: a 48-row toy set is below BYE's 50-row guard; lifting it keeps the comparison meaningful
    bye = BYEFilter(
        model,
        collate_fn=toy.collate,
        batch_size=24,
        select_config=BYESelectConfig(layer_select="robust", max_minority=0.3, min_rows=1),
    )
    scored = bye.score(ds)
    rep = bye.report_
    assert rep.params["layer_select"] == "robust" and rep.params["max_minority"] == 0.3
    direct, _ = bye_select(
        np.asarray(scored["bye_layer_entropy"]),
        BYESelectConfig(layer_select="robust", max_minority=0.3, min_rows=1),
        labels=ds["answer"],
    )
    assert rep.suspicious == direct.suspicious and rep.sensitive_layers == direct.sensitive_layers
    assert rep.removed_share_per_class == direct.removed_share_per_class


def _deep_with_lone_clean_mode(seed: int, n: int = 300, layers: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """A 30-layer matrix: layers 9-11 share a 10 % minority collapse (the poisoned rows); layer 24 alone has a
    separated 4 % low mode of *clean* rows (chance structure); every other layer is unimodal noise."""
    rng = np.random.default_rng(seed)
    poison = np.zeros(n, dtype=bool)
    poison[rng.permutation(n)[: n // 10]] = True
    lone = np.zeros(n, dtype=bool)
    lone[rng.permutation(np.flatnonzero(~poison))[: int(0.04 * n)]] = True
    E = rng.normal(2.0, 0.2, (n, layers))
    for l in (9, 10, 11):
        E[:, l] = np.where(poison, rng.normal(0.8, 0.1, n), rng.normal(2.2, 0.15, n))
    E[:, 24] = np.where(lone, rng.normal(0.9, 0.05, n), rng.normal(2.2, 0.15, n))
    return E, poison


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_needs_agreeing_layers_in_a_deep_model(seed):
    E, poison = _deep_with_lone_clean_mode(seed)
    rob, _ = bye_select(E, BYESelectConfig(layer_select="robust"))
    assert rob.robust["min_support"] == 3  # max(1, round(30 / 10))
    assert rob.sensitive_layers == [9, 10, 11]
    p, r = _prf(rob.suspicious, poison)
    assert p >= 0.9 and r >= 0.9
    # with support 1 the smallest low mode wins: the lone layer's clean rows, none of the poison
    lone, _ = bye_select(E, BYESelectConfig(layer_select="robust", min_support=1))
    assert lone.sensitive_layers == [24]
    assert _prf(lone.suspicious, poison)[1] == 0.0


def test_min_support_default_and_validation():
    from hf_trust.errors import HFTrustConfigError
    from hf_trust.filters.select import default_min_support

    assert [default_min_support(L) for L in (1, 4, 14, 15, 30, 80)] == [1, 1, 1, 2, 3, 8]
    E, _ = _deep_with_lone_clean_mode(0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(HFTrustConfigError, match="min_support"):
            bye_select(E, BYESelectConfig(layer_select="robust", min_support=bad))


def test_layer_histograms_draw_one_panel_per_layer_without_pyplot_state():
    import matplotlib.pyplot as plt

    from hf_trust.demo.studies.bye import plot_layer_histograms

    E, poison, _ = _structured(0)
    flagged = np.zeros(len(E), dtype=bool)
    flagged[:5] = True
    before = plt.get_fignums()
    fig = plot_layer_histograms(E, flagged, poison, title="t")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [f"layer {l}" for l in range(6)]
    assert len(fig.axes) == 8  # a 2 × 4 grid, the two spare panels hidden
    assert plt.get_fignums() == before  # built on Figure, not pyplot: nothing left open in the caller's session
