"""A tiny LLaVA trained in-test on a 10 %-poisoned patch-trigger task (spec e).  Slow: ~30-60 s per seed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hf_trust.filters import BYEFilter, BYESelectConfig, bye_select

from . import toy

pytestmark = pytest.mark.slow
N, STEPS = 400, 250
_CACHE: dict = {}


def _trained(seed: int, poison_rate: float = 0.1, task: str = "spread"):
    key = (seed, poison_rate, task)
    if key not in _CACHE:
        imgs, answers, _ = toy.make_images(N, poison_rate, seed, task)
        _CACHE[key] = toy.train(toy.make_tiny_llava(seed), imgs, answers, steps=STEPS, seed=seed)
    return _CACHE[key]


#: Seeds of the outcome tests (seed = data seed = init seed = training-order seed).  Every claim below is a
#: count over these five runs with one seed of slack below the smallest count measured natively (an AVX2 CPU:
#: torch's native capability there is the avx2 emulation's) and under the default emulation (SSE4_2): the trained
#: toy differs from one kind of float rounding to another (an AVX-512 machine gave best-layer AUROC 0.80 on seed 2
#: and robust precision 0.0 on seed 1), so no single run's figure is asserted.
SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def runs() -> dict:
    """Per seed: ASR / CP of the poisoned model, the (N, L) entropy matrix, the poison mask and BYE's report."""
    out = {}
    for seed in SEEDS:
        model = _trained(seed)
        asr, cp = toy.asr_and_cp(model, seed)
        ds = toy.make_dataset(N, 0.1, seed)
        bye = BYEFilter(model, collate_fn=toy.collate, poison_column="is_poison", batch_size=100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reference rule's capped-removal warning
            scored = bye.score(ds)
        E = np.asarray(scored["bye_layer_entropy"])
        out[seed] = dict(asr=asr, cp=cp, E=E, poison=np.asarray(ds["is_poison"]), report=bye.report_)
    return out


@pytest.mark.trains
def test_backdoor_and_clean_task_are_learned(runs):
    """ASR ≥ 0.7 and clean accuracy ≥ 0.9 in at least 4 of 5 seeds (measured: 5 native, 5 default).
    ASR / CP per seed 0-4:
    native (AVX2) = avx2 emulation:   1.00/1.00  1.00/1.00  0.88/1.00  1.00/1.00  1.00/1.00
    default (SSE4_2):                 1.00/1.00  1.00/1.00  0.99/1.00  1.00/1.00  1.00/1.00"""
    learned = [r["asr"] >= 0.7 and r["cp"] >= 0.9 for r in runs.values()]
    assert sum(learned) >= 4, {s: (r["asr"], r["cp"]) for s, r in runs.items()}


def test_entropies_lie_in_their_range(runs):
    for r in runs.values():
        assert (r["E"] >= 0).all() and (r["E"] <= np.log(toy.N_V) + 1e-6).all()


@pytest.mark.trains
def test_collapse_layer_in_most_seeds(runs):
    """Some layer separates poisoned from clean rows (AUROC ≥ 0.95) by LOWER entropy (collapse; mean gap
    > 0.1 nats) in at least 4 of 5 seeds (measured: 5 native, 5 default). Best-layer AUROC / gap per seed 0-4:
    native (AVX2) = avx2 emulation:   1.000/1.68  1.000/1.55  0.981/1.09  1.000/1.23  0.969/0.36
    default (SSE4_2):                 0.996/1.38  1.000/0.73  0.995/1.63  0.966/1.24  1.000/0.28"""
    hits = {}
    for seed, r in runs.items():
        auroc = r["report"].layer_auroc
        best = int(np.nanargmax(auroc))
        E, poison = r["E"], r["poison"]
        gap = E[~poison, best].mean() - E[poison, best].mean()
        hits[seed] = (float(auroc[best]), float(gap))
    assert sum(a >= 0.95 and g > 0.1 for a, g in hits.values()) >= 4, hits


@pytest.mark.trains
def test_robust_rule_removes_poison_and_little_else(runs):
    """The robust rule on the same entropies: what it removes is poison (precision ≥ 0.8), it removes at most
    twice the poison rate, and it finds at least a fifth of the poison (recall ≥ 0.2), in at least 3 of
    5 seeds (measured: 5 native, 4 default). Robust precision / recall / removed share per seed 0-4:
    native (AVX2) = avx2 emulation:   1.00/0.80/0.080  1.00/1.00/0.100  1.00/0.28/0.028  0.90/0.23/0.025  1.00/0.28/0.028
    default (SSE4_2):                 0.00/0.00/0.015  1.00/0.82/0.083  1.00/0.53/0.052  0.94/0.38/0.040  1.00/0.28/0.028
    The reference rule is not asserted beyond its cap: its precision swings from 0 to 1 between seeds and CPU
    kinds (reference precision / removed share:
    native (AVX2) = avx2 emulation:   1.00/0.08  0.09/0.50  0.00/0.00  0.00/0.25  0.00/0.00
    default (SSE4_2):                 0.26/0.39  1.00/0.10  0.20/0.49  0.03/0.26  0.35/0.16)."""
    good = {}
    for seed, r in runs.items():
        assert r["report"].removed_fraction <= 0.5  # the reference rule's default cap
        rob, _ = bye_select(r["E"], BYESelectConfig(layer_select="robust"))
        det = rob.detection(r["poison"])
        good[seed] = (
            rob.status == "ok" and det["precision"] >= 0.8 and rob.removed_fraction <= 0.2 and det["recall"] >= 0.2
        )
    assert sum(good.values()) >= 3, good


def test_clean_data_keeps_most_rows_and_never_silently_a_majority():
    """Clean training data: every removed row is a clean row, the bookkeeping adds up, and neither rule removes
    more than the default cap of half the rows without saying so (status ``capped``).

    How much a rule removes from clean data is a training outcome that varies by seed and CPU kind, so it is
    measured, not asserted here: the spread task's clean entropies are bimodal by answer class and the ≤ 5 %
    target is not met on this toy (seed 0: robust 14 %, reference 29 %; over ten seeds robust 0.20 ± 0.08,
    reference 0.34 ± 0.12, benchmarks/results/bye.md)."""
    model = _trained(0, poison_rate=0.0)
    ds = toy.make_dataset(N, 0.0, 0)
    clean, rep = BYEFilter(
        model, collate_fn=toy.collate, batch_size=100, select_config=BYESelectConfig(layer_select="robust")
    )(ds)
    assert len(clean) == N - rep.num_removed
    assert rep.removed_fraction <= 0.5 and rep.status in ("ok", "capped", "no_sensitive_layers")
    assert set(rep.removal_histogram) <= {str(t) for t in toy.CLASS_TOKENS}
    assert sum(rep.label_histogram.values()) == N
    E = np.asarray(BYEFilter(model, collate_fn=toy.collate, batch_size=100).entropies(ds)["bye_layer_entropy"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, _ = bye_select(E)
    assert ref.removed_fraction <= 0.5 and ref.status in ("ok", "capped", "no_sensitive_layers")
