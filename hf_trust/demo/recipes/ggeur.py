"""GGEUR on real frozen features: EfficientNet-Lite0 embeddings of Fashion-MNIST (or the digit domains).

Label skew: 10 clients, Dirichlet α; FedAvg alone and with four augmentations at equal sample counts
(oversampled real rows, isotropic noise, client-local covariance, GGEUR's global covariance).
Domain skew: one client per digit domain (handwritten / printed / corrupted), GGEUR's multi-domain rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hf_trust.atomic import atomic_save
from hf_trust.demo import RecipeContext, RecipeResult, register_recipe

logger = logging.getLogger("hf_trust.demo.ggeur")

VARIANTS = ("none", "oversample", "isotropic", "local_cov", "ggeur")


# Bumped whenever the way features are computed changes (preprocessing, pooling): old cache files go stale.
FEATURE_VERSION = 2


def _sha256_arrays(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return digest.hexdigest()


def module_fingerprint(model: Any) -> str:
    """SHA-256 of a module's class and every tensor of its state dict (names, dtypes, shapes, values)."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        digest.update(name.encode())
        digest.update(_sha256_arrays(t.detach().cpu().numpy()).encode())
    return digest.hexdigest()


def cached_arrays(folder: Path, stem: str, key: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]):
    """Arrays cached under ``folder`` in a file named after ``stem`` and the hash of ``key``.

    ``key`` must hold everything that determines the arrays. The file stores the key itself and the
    SHA-256 of every array, and is verified on read: a truncated file, a key mismatch (a hash collision
    or a hand-copied file) or changed contents raise no error but are logged and recomputed; every write
    is atomic, so an interrupted run never leaves a half file that a later run would trust.
    """
    blob = json.dumps(key, sort_keys=True, default=str)
    path = Path(folder) / f"{stem}_{hashlib.sha256(blob.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        problem = None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(str(arrays.pop("__meta__")))
            if meta.get("key") != json.loads(blob):
                problem = "it was written for other settings"
            elif meta.get("sha256") != {k: _sha256_arrays(v) for k, v in sorted(arrays.items())}:
                problem = "its contents do not match their recorded SHA-256"
        except Exception as exc:  # truncated zip, missing member, bad JSON: all mean "recompute"
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        if problem is None:
            return arrays
        logger.warning("feature cache %s is stale or corrupt (%s); recomputing it.", path, problem)
    arrays = compute()
    meta = {"key": json.loads(blob), "sha256": {k: _sha256_arrays(v) for k, v in sorted(arrays.items())}}

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
        "encoder": module_fingerprint(model),
        "data": _sha256_arrays(*images.values(), *labels.values(), *domains.values()),
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
    train, test, alpha: float, seed: int, rounds: int, variants=VARIANTS, clients: int = 10, progress=None
) -> dict[str, float]:
    """Final-round test accuracy of FedAvg with each augmentation variant on one Dirichlet split."""
    from hf_trust.trainers.federated import DirichletLabelPartitioner, FedAvg, FederatedConfig
    from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer

    parts = DirichletLabelPartitioner(num_clients=clients, alpha=alpha, min_size=1, min_per_class=1, seed=seed).split(
        train
    )
    out = {}
    for variant in variants if progress is None else progress(variants, desc=f"α={alpha} seed={seed}"):
        cfg = GGEURConfig(augment=variant, lr=1e-3, batch_size=64, local_epochs=2, per_sample=50, seed=seed)
        trainer = GGEURTrainer(cfg, FedAvg(), FederatedConfig(rounds=rounds, seed=seed), eval_datasets={"test": test})
        out[variant] = trainer.fit(parts)[-1]["eval_test_accuracy"]
    return out


def run_multi_domain(train, test, seed: int, rounds: int, target: int = 300) -> dict[str, dict[str, float]]:
    """Per-domain test accuracy without and with GGEUR's multi-domain rule (one client per domain)."""
    from hf_trust.trainers.federated import DomainPartitioner, FedAvg, FederatedConfig
    from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer

    parts = DomainPartitioner(num_clients=3, seed=seed).split(train, domain_column="domain")
    domains = sorted(set(test["domain"]))
    evals = {d: test.filter(lambda r, d=d: r["domain"] == d) for d in domains}
    out = {}
    for variant in ("none", "ggeur"):
        cfg = GGEURConfig(
            mode="multi_domain",
            augment=variant,
            lr=1e-3,
            batch_size=32,
            local_epochs=2,
            target_per_class=target,
            step1_keep=target // 2,
            prototype_draws=target // 2,
            seed=seed,
        )
        hist = GGEURTrainer(cfg, FedAvg(), FederatedConfig(rounds=rounds, seed=seed), eval_datasets=evals).fit(parts)
        out[variant] = {d: hist[-1][f"eval_{d}_accuracy"] for d in domains}
    return out


@register_recipe("ggeur", title="GGEUR: geometry-guided augmentation on EfficientNet features", minutes=1.5)
def run(ctx: RecipeContext, dataset: Optional[str] = None) -> RecipeResult:
    from hf_trust import assets

    result = RecipeResult()
    name = dataset or ("fashion" if assets.FASHION_MNIST_DIR.is_dir() else "digits")
    n_train, n_test, size = (2000, 1000, 32) if ctx.full else (1500, 500, 32)
    alphas = (0.05, 0.1, 0.5) if ctx.full else (0.1,)
    rounds = 10
    train, test = efficientnet_embeddings(name, n_train, n_test, size)
    result.note(
        f"{name}: {len(train)} train / {len(test)} test EfficientNet-Lite0 features ({size}px), "
        f"10 clients, Dir(α) with ≥1 sample per class, {rounds} rounds × 2 local epochs, Adam 1e-3."
    )
    for alpha in alphas:
        table = {v: [] for v in VARIANTS}
        for seed in ctx.seeds:
            for v, acc in run_label_skew(train, test, alpha, seed, rounds, progress=ctx.progress).items():
                table[v].append(acc)
        for v in VARIANTS:
            result.add(
                f"{name} α={alpha}",
                f"acc {'FedAvg' if v == 'none' else '+' + v}",
                float(np.mean(table[v])),
                std=float(np.std(table[v])) if len(table[v]) > 1 else None,
                n=len(table[v]),
            )
    dtrain, dtest = efficientnet_embeddings("digits", 900, 300, size)
    md = {"none": {}, "ggeur": {}}
    for seed in ctx.seeds:
        for variant, accs in run_multi_domain(dtrain, dtest, seed, rounds).items():
            for d, a in accs.items():
                md[variant].setdefault(d, []).append(a)
    for variant in ("none", "ggeur"):
        for d, accs in md[variant].items():
            result.add(
                f"digit domains, client={d}",
                f"acc {'FedAvg' if variant == 'none' else '+GGEUR'}",
                float(np.mean(accs)),
                std=float(np.std(accs)) if len(accs) > 1 else None,
                n=len(accs),
            )
    return result
