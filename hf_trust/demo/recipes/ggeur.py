"""GGEUR on real frozen features: EfficientNet-Lite0 embeddings of Fashion-MNIST (or the digit domains).

Label skew: 10 clients, Dirichlet α; FedAvg alone and with four augmentations at equal sample counts
(oversampled real rows, isotropic noise, client-local covariance, GGEUR's global covariance).
Domain skew: one client per digit domain (handwritten / printed / corrupted), GGEUR's multi-domain rule.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe

VARIANTS = ("none", "oversample", "isotropic", "local_cov", "ggeur")


def efficientnet_embeddings(name: str, n_train: int, n_test: int, size: int, seed: int = 0):
    """Cached EfficientNet-Lite0 features: ``(train Dataset, test Dataset)`` with embedding, label(, domain)."""
    from datasets import Dataset

    from hf_trust import assets

    key = hashlib.sha256(f"{name}|{n_train}|{n_test}|{size}|{seed}".encode()).hexdigest()[:12]
    path = assets.cache_dir() / "features" / f"effnet_{name}_{key}.npz"
    if not path.is_file():
        model = assets.load_efficientnet_lite0()
        if name == "fashion":
            tr = assets.load_fashion_mnist("train", limit=n_train, seed=seed)
            te = assets.load_fashion_mnist("test", limit=n_test, seed=seed)
            dom_tr = dom_te = None
        else:
            full = assets.load_digit_domains(n_per_class=(n_train + n_test) // 30, seed=seed)
            split = full.train_test_split(test_size=n_test / len(full), seed=seed, stratify_by_column="label")
            tr, te = split["train"], split["test"]
            dom_tr, dom_te = tr["domain"], te["domain"]
        feats = {}
        for tag, ds in (("train", tr), ("test", te)):
            imgs = np.stack([np.asarray(im) for im in ds["image"]])
            feats[tag] = assets.efficientnet_features(model, imgs, size=size)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            xtr=feats["train"],
            ytr=np.asarray(tr["label"]),
            xte=feats["test"],
            yte=np.asarray(te["label"]),
            dtr=np.asarray(dom_tr if dom_tr is not None else []),
            dte=np.asarray(dom_te if dom_te is not None else []),
        )
    data = np.load(path)

    def make(x, y, d):
        cols = {"embedding": x.astype(np.float32).tolist(), "label": y.tolist()}
        if len(d):
            cols["domain"] = d.tolist()
        return Dataset.from_dict(cols)

    return make(data["xtr"], data["ytr"], data["dtr"]), make(data["xte"], data["yte"], data["dte"])


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
