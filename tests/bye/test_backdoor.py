"""A tiny LLaVA trained in-test on a 10 %-poisoned patch-trigger task (spec e).  Slow: ~30-60 s per seed."""

from __future__ import annotations

import numpy as np
import pytest

from hf_trust.filters import BYEFilter

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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_collapse_layer_in_every_seed(seed):
    model = _trained(seed)
    asr, cp = toy.asr_and_cp(model, seed)
    assert asr >= 0.7 and cp >= 0.9  # the backdoor was learned, the clean task too
    ds = toy.make_dataset(N, 0.1, seed)
    bye = BYEFilter(model, collate_fn=toy.collate, poison_column="is_poison", batch_size=100)
    scored = bye.score(ds)
    rep = bye.report_
    E = np.asarray(scored["bye_layer_entropy"])
    poison = np.asarray(ds["is_poison"])
    best = int(np.nanargmax(rep.layer_auroc))
    assert rep.layer_auroc[best] >= 0.95  # some layer separates poisoned from clean
    assert E[poison, best].mean() < E[~poison, best].mean() - 0.1  # ... by LOWER entropy (collapse)
    assert (E >= 0).all() and (E <= np.log(toy.N_V) + 1e-6).all()
    # The reference selection rule's outcome is recorded, not asserted (spec e: it succeeded in 1 of 3 seeds).
    assert rep.removed_fraction == pytest.approx(np.mean(scored["bye_suspicious"]))


def test_clean_data_reports_removal_fraction_and_class_histogram():
    model = _trained(0, poison_rate=0.0)
    ds = toy.make_dataset(N, 0.0, 0)
    clean, rep = BYEFilter(model, collate_fn=toy.collate, batch_size=100)(ds)
    assert len(clean) == N - rep.num_removed
    assert rep.removed_fraction == pytest.approx(rep.num_removed / N)
    assert sum(rep.label_histogram.values()) == N
    assert sum(rep.removal_histogram.values()) == rep.num_removed
    assert set(rep.removal_histogram) <= {str(t) for t in toy.CLASS_TOKENS}
