"""Local augmentation rules of GGEUR (spec b.6 single domain, b.7 multi domain).

Both functions take one client's real embeddings and return the client's new training set (real rows
first, always kept unless the official quirk is asked for) with a boolean ``synthetic`` mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from hf_trust.errors import HFTrustKeyError

from .geometry import GeometricShape, Scale


@dataclass
class AugmentedSet:
    embeddings: np.ndarray
    labels: np.ndarray
    synthetic: np.ndarray

    def counts(self) -> dict[int, int]:
        vals, cnt = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(vals, cnt)}


def default_per_sample(n_real: int, num_classes: int) -> int:
    """Draws around each real sample when a class has fewer real rows than it needs (official values):
    5000 (n < 10) or 500 (n ≥ 10) for 10-class data, 500 or 50 for 100/200-class data."""
    small = n_real < 10
    if num_classes <= 10:
        return 5000 if small else 500
    return 500 if small else 50


def _draw_from_pool(
    shape: GeometricShape,
    centers: np.ndarray,
    per_center: int,
    keep: int,
    rng: np.random.Generator,
    scale: Scale,
) -> np.ndarray:
    """Keep a uniformly random ``keep`` of the ``len(centers) * per_center`` draws, without building them all.

    Choosing ``keep`` pool slots without replacement and drawing only those is the same distribution as
    drawing the whole pool and sub-sampling it, at the memory of ``keep`` rows.
    """
    pool = len(centers) * per_center
    keep = min(keep, pool)
    slots = rng.choice(pool, size=keep, replace=False)
    return shape.sample(centers[slots // per_center], rng, scale=scale)


def augment_single_domain(
    embeddings: np.ndarray,
    labels: Sequence[int],
    shapes: Mapping[int, GeometricShape],
    target_per_class: Mapping[int, int] | int,
    rng: np.random.Generator,
    scale: Scale = "sqrt",
    num_classes: Optional[int] = None,
    per_sample: Optional[int] = None,
) -> AugmentedSet:
    """Fill every class the client holds up to its target (spec b.6).

    need = target − n.  If n ≥ need, ``need`` distinct real rows each get one draw; otherwise ``per``
    draws around every real row form a pool of which a random ``need`` are kept.  Real rows are always
    kept; classes the client does not hold stay absent.
    """
    z = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    num_classes = num_classes or (int(y.max()) + 1 if len(y) else 0)
    new_z, new_y = [z], [y]
    for c in np.unique(y):
        c = int(c)
        real = z[y == c]
        n = len(real)
        target = target_per_class if isinstance(target_per_class, int) else target_per_class.get(c, n)
        need = int(target) - n
        if need <= 0:
            continue
        if c not in shapes:
            raise HFTrustKeyError(
                f"no global shape for class {c}; the server's statistics must cover every held class "
                f"(shapes has {sorted(shapes)}): aggregate the payloads of every client that holds it."
            )
        if n >= need:
            centers = real[rng.choice(n, size=need, replace=False)]
            draws = shapes[c].sample(centers, rng, scale=scale)
        else:
            per = per_sample or default_per_sample(n, num_classes)
            draws = _draw_from_pool(shapes[c], real, per, need, rng, scale)
        new_z.append(draws)
        new_y.append(np.full(len(draws), c, dtype=y.dtype))
    emb = np.concatenate(new_z)
    lab = np.concatenate(new_y)
    mask = np.zeros(len(emb), dtype=bool)
    mask[len(z) :] = True
    return AugmentedSet(emb, lab, mask)


def augment_multi_domain(
    embeddings: np.ndarray,
    labels: Sequence[int],
    shapes: Mapping[int, GeometricShape],
    prototypes: Mapping[int, Sequence[np.ndarray]],
    rng: np.random.Generator,
    scale: Scale = "sqrt",
    num_per_sample: int = 12,
    step1_keep: int = 500,
    prototype_draws: int = 500,
    target_per_class: int = 2000,
    classes: Optional[Sequence[int]] = None,
    official: bool = False,
) -> AugmentedSet:
    """Multi-domain rule (spec b.7) for one client.

    Step 1: ``num_per_sample`` draws around each real row, a random ``step1_keep`` of them kept.
    Step 2: ``prototype_draws`` draws around each *other* domain's class mean (``prototypes[c]``).
    Then per class: real rows + a random ``target − n`` of the Step 1 ∪ Step 2 pool.

    ``official=True`` reproduces two quirks of the released code: a class with at least ``target`` real
    rows keeps only a random ``target`` of them (surplus dropped), and a class with no real row takes the
    *first* ``target`` prototype draws (i.e. mostly the first other domain) instead of a random subset.
    """
    z = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    all_classes = sorted(set(int(c) for c in (classes if classes is not None else shapes.keys())))
    out_z, out_y, out_s = [], [], []
    for c in all_classes:
        real = z[y == c]
        shape = shapes.get(c)
        kept_real, chosen = _multi_domain_class(
            real,
            shape,
            prototypes.get(c, []) if shape is not None else [],
            rng,
            scale=scale,
            num_per_sample=num_per_sample,
            step1_keep=step1_keep,
            prototype_draws=prototype_draws,
            target=target_per_class,
            official=official,
        )
        out_z += [kept_real, chosen]
        out_y += [np.full(len(kept_real), c), np.full(len(chosen), c)]
        out_s += [np.zeros(len(kept_real), bool), np.ones(len(chosen), bool)]
    if not out_z:
        return AugmentedSet(np.zeros((0, z.shape[1])), np.zeros(0, int), np.zeros(0, bool))
    return AugmentedSet(np.concatenate(out_z), np.concatenate(out_y).astype(int), np.concatenate(out_s))


def _multi_domain_class(
    real: np.ndarray,
    shape: Optional[GeometricShape],
    prototypes: Sequence[np.ndarray],
    rng: np.random.Generator,
    scale: Scale,
    num_per_sample: int,
    step1_keep: int,
    prototype_draws: int,
    target: int,
    official: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One class of :func:`augment_multi_domain`: ``(real rows kept, synthetic rows chosen)``."""
    n, dim = len(real), real.shape[1]
    if n >= target:
        return (real[rng.choice(n, size=target, replace=False)] if official else real), np.zeros((0, dim))
    pools = []
    if n > 0 and shape is not None:
        pools.append(_draw_from_pool(shape, real, num_per_sample, step1_keep, rng, scale))  # Step 1
    step2 = [shape.sample(np.asarray(p)[None, :], rng, scale=scale, per_center=prototype_draws) for p in prototypes]
    pools += step2
    if not pools:
        return real, np.zeros((0, dim))
    pool = np.concatenate(pools)
    need = min(target - n, len(pool))
    if official and n == 0:
        return real, (np.concatenate(step2)[:need] if step2 else pool[:need])
    return real, pool[rng.choice(len(pool), size=need, replace=False)]
