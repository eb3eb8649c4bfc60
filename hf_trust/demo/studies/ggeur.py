"""GGEUR experiment drivers on real frozen features: EfficientNet-Lite0 embeddings of Fashion-MNIST or
the digit domains (cached), label-skew runs of FedAvg with each augmentation at equal sample counts, and
the one-client-per-domain runs of the multi-domain rule against FedAvg and the equal-count control.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hf_trust.atomic import atomic_save
from hf_trust.fingerprint import arrays_sha256, json_sha256, model_identity

logger = logging.getLogger("hf_trust.demo.ggeur")

#: augmentations compared at equal per-class counts ("none" is plain FedAvg on the real rows)
VARIANTS = ("none", "oversample", "isotropic", "local_cov", "ggeur")
#: the quick demo runs FedAvg, its equal-count control and GGEUR only: "local_cov" (per-client, per-class d×d
#: eigendecompositions, 100 at d = 1280) costs more than all the other variants together, and "isotropic" is
#: an ablation the claim does not read (both run with ``--full``)
QUICK_VARIANTS = ("none", "oversample", "ggeur")
MULTI_DOMAIN_VARIANTS = ("none", "oversample", "ggeur")


# Bumped whenever the way features are computed changes (preprocessing, pooling): old cache files go stale.
FEATURE_VERSION = 2


def _encoder_identity(model: Any) -> str:
    """:func:`~hf_trust.fingerprint.model_identity` of the encoder. Its 0-d tensors (BatchNorm's
    ``num_batches_tracked``) are passed as 1-element vectors: the byte view the helper takes of a tensor
    refuses 0-d integer tensors."""
    return model_identity(model, tensors={k: v.reshape(-1) for k, v in model.state_dict().items()})


def cached_arrays(folder: Path, stem: str, key: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]):
    """Arrays cached under ``folder`` in a file named after ``stem`` and the hash of ``key``.

    ``key`` must hold everything that determines the arrays. The file stores the key itself and the
    SHA-256 of every array, and is verified on read: a truncated file, a key mismatch (a hash collision
    or a hand-copied file) or changed contents raise no error but are logged and recomputed; every write
    is atomic, so an interrupted run never leaves a half file that a later run would trust.
    """
    blob = json.dumps(key, sort_keys=True, default=str)
    path = Path(folder) / f"{stem}_{json_sha256(key)[:16]}.npz"
    if path.is_file():
        problem = None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(str(arrays.pop("__meta__")))
            if meta.get("key") != json.loads(blob):
                problem = "it was written for other settings"
            elif meta.get("sha256") != {k: arrays_sha256(v) for k, v in sorted(arrays.items())}:
                problem = "its contents do not match their recorded SHA-256"
        except Exception as exc:  # truncated zip, missing member, bad JSON: all mean "recompute"
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        if problem is None:
            return arrays
        logger.warning("feature cache %s is stale or corrupt (%s); recomputing it.", path, problem)
    arrays = compute()
    meta = {"key": json.loads(blob), "sha256": {k: arrays_sha256(v) for k, v in sorted(arrays.items())}}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would otherwise append ".npz" to the name
            np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)

    atomic_save(path, write)
    return arrays


def efficientnet_embeddings(name: str, n_train: int, n_test: int, size: int, seed: int = 0):
    """Cached EfficientNet-Lite0 features: ``(train Dataset, test Dataset)`` with embedding, label(, domain).

    The cache is keyed on the data (a hash of the very images and labels), the encoder (a hash of its
    weights), the input size, the subset sizes, the seed and :data:`FEATURE_VERSION`.
    """
    from datasets import Dataset

    from hf_trust import assets

    if name == "fashion":
        tr = assets.load_fashion_mnist("train", limit=n_train, seed=seed)
        te = assets.load_fashion_mnist("test", limit=n_test, seed=seed)
    else:
        full = assets.load_digit_domains(n_per_class=(n_train + n_test) // 30, seed=seed)
        split = full.train_test_split(test_size=n_test / len(full), seed=seed, stratify_by_column="label")
        tr, te = split["train"], split["test"]
    images = {tag: np.stack([np.asarray(im) for im in ds["image"]]) for tag, ds in (("train", tr), ("test", te))}
    labels = {tag: np.asarray(ds["label"]) for tag, ds in (("train", tr), ("test", te))}
    domains = {
        tag: np.asarray(ds["domain"] if "domain" in ds.column_names else [], dtype=str)
        for tag, ds in (("train", tr), ("test", te))
    }
    model = assets.load_efficientnet_lite0()
    key = {
        "dataset": name,
        "n_train": n_train,
        "n_test": n_test,
        "size": size,
        "seed": seed,
        "version": FEATURE_VERSION,
        "encoder": _encoder_identity(model),
        "data": arrays_sha256(*images.values(), *labels.values(), *domains.values()),
    }

    def compute() -> dict[str, np.ndarray]:
        return {
            "xtr": assets.efficientnet_features(model, images["train"], size=size),
            "xte": assets.efficientnet_features(model, images["test"], size=size),
        }

    feats = cached_arrays(assets.cache_dir() / "features", f"effnet_{name}", key, compute)

    def make(x, y, d):
        cols = {"embedding": x.astype(np.float32).tolist(), "label": y.tolist()}
        if len(d):
            cols["domain"] = d.tolist()
        return Dataset.from_dict(cols)

    return (
        make(feats["xtr"], labels["train"], domains["train"]),
        make(feats["xte"], labels["test"], domains["test"]),
    )


def run_label_skew(
    train,
    test,
    alpha: float,
    seed: int,
    rounds: int,
    variants=VARIANTS,
    clients: int = 10,
    progress=None,
    keep_ggeur: bool = False,
    local_epochs: int = 2,
) -> dict[str, Any]:
    """FedAvg with each augmentation variant on one Dirichlet split (``local_epochs`` per round; the published
    quick figures use 2, the authors train 10).

    Returns ``{variant: {"final": last-round test accuracy, "curve": accuracy per round}}``; with
    ``keep_ggeur`` also ``"ggeur_trainer"`` (the GGEUR run, its augmented rows kept) and ``"partitions"``.
    """
    from hf_trust.trainers.federated import DirichletLabelPartitioner, FedAvg, FederatedConfig
    from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer

    parts = DirichletLabelPartitioner(num_clients=clients, alpha=alpha, min_size=1, min_per_class=1, seed=seed).split(
        train
    )
    out: dict[str, Any] = {}
    for variant in variants if progress is None else progress(variants, desc=f"α={alpha} seed={seed}"):
        keep = keep_ggeur and variant == "ggeur"
        cfg = GGEURConfig(augment=variant, lr=1e-3, batch_size=64, per_sample=50, seed=seed, keep_augmented=keep)
        fed = FederatedConfig(rounds=rounds, local_epochs=local_epochs, seed=seed)
        trainer = GGEURTrainer(cfg, FedAvg(), fed, eval_datasets={"test": test})
        hist = trainer.fit(parts)
        out[variant] = {"final": hist[-1]["eval_test_accuracy"], "curve": [r["eval_test_accuracy"] for r in hist]}
        if keep:
            out["ggeur_trainer"], out["partitions"] = trainer, parts
    return out


def run_multi_domain(
    train, test, seed: int, rounds: int, target: int = 300, variants=MULTI_DOMAIN_VARIANTS, local_epochs: int = 2
) -> dict[str, dict[str, float]]:
    """Per-domain test accuracy of FedAvg (one client per domain) alone, with the equal-count control
    (each client's rows resampled to ``target`` per class) and with GGEUR's multi-domain rule."""
    from hf_trust.trainers.federated import DomainPartitioner, FedAvg, FederatedConfig
    from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer

    parts = DomainPartitioner(num_clients=3, seed=seed).split(train, domain_column="domain")
    domains = sorted(set(test["domain"]))
    evals = {d: test.filter(lambda r, d=d: r["domain"] == d) for d in domains}
    out = {}
    for variant in variants:
        cfg = GGEURConfig(
            mode="multi_domain",
            augment=variant,
            lr=1e-3,
            batch_size=32,
            target_per_class=target,
            step1_keep=target // 2,
            prototype_draws=target // 2,
            seed=seed,
        )
        fed = FederatedConfig(rounds=rounds, local_epochs=local_epochs, seed=seed)
        hist = GGEURTrainer(cfg, FedAvg(), fed, eval_datasets=evals).fit(parts)
        out[variant] = {d: hist[-1][f"eval_{d}_accuracy"] for d in domains}
    return out


def projection_sample(trainer, parts, max_classes: int = 3, max_points: int = 150, seed: int = 0) -> dict[str, Any]:
    """2-D PCA view of one client's real and GGEUR-generated embeddings against every client's real rows.

    The client is the one with the fewest real rows; its ``max_classes`` held classes with the most
    generated rows are shown. The PCA is fitted on the real training rows of those classes (all clients),
    so the generated rows are placed in the same coordinates as the data they stand in for.
    """
    rng = np.random.default_rng(seed)
    k = int(np.argmin(parts.sizes()))
    aug = trainer.partitions.augmented(k)
    synth_counts = {int(c): int(((aug.labels == c) & aug.synthetic).sum()) for c in np.unique(aug.labels)}
    classes = sorted(synth_counts, key=lambda c: -synth_counts[c])[:max_classes]
    z_all = np.asarray(parts.dataset["embedding"], dtype=np.float64)
    y_all = np.asarray(parts.dataset["label"])
    ref = np.isin(y_all, classes)
    center = z_all[ref].mean(0)
    _, _, vt = np.linalg.svd(z_all[ref] - center, full_matrices=False)

    def proj(z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, dtype=np.float64) - center) @ vt[:2].T

    def pick(mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        return idx if len(idx) <= max_points else np.sort(rng.choice(idx, max_points, replace=False))

    out: dict[str, Any] = {"client": k, "classes": classes, "by_class": {}}
    for c in classes:
        g = pick(y_all == c)
        real = pick((aug.labels == c) & ~aug.synthetic)
        gen = pick((aug.labels == c) & aug.synthetic)
        out["by_class"][c] = {
            "global_real": proj(z_all[g]),
            "client_real": proj(aug.embeddings[real]),
            "generated": proj(aug.embeddings[gen]),
            "n_client_real": int(((aug.labels == c) & ~aug.synthetic).sum()),
            "n_generated": synth_counts[c],
        }
    return out
