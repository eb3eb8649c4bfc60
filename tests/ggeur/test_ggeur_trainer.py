"""GGEURTrainer end to end on the federated core."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_trust.trainers.federated import DirichletLabelPartitioner, DomainPartitioner, FedAvg, FederatedConfig, FedProx
from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer
from tests.ggeur.ggeur_fixtures import digit_embeddings
from tests.launch import accelerate_launch


def _parts(train, alpha=0.1, clients=6, seed=0):
    return DirichletLabelPartitioner(num_clients=clients, alpha=alpha, min_size=1, seed=seed).split(train)


def test_statistics_round_pools_exactly_and_sends_statistics_only():
    train, test = digit_embeddings()
    parts = _parts(train)
    t = GGEURTrainer(GGEURConfig(guide_threshold=None, per_sample=10), FedAvg(), FederatedConfig(rounds=1))
    t.fit(parts)
    x, y = np.asarray(train["embedding"]), np.asarray(train["label"])
    for c in range(10):
        assert np.abs(t.pooled_cov[c].numpy() - np.cov(x[y == c], rowvar=False, bias=True)).max() < 1e-10
    assert len(t.payload_bytes) == parts.num_clients
    # each payload is statistics: about C·(d + d²) float64, far below the rows it summarises for big clients
    assert max(t.payload_bytes) < 10 * (64 + 64 * 64) * 8 * 1.1 + 5000


def test_single_domain_counts_cap_and_absent_classes():
    train, _ = digit_embeddings()
    parts = _parts(train, alpha=0.05)
    t = GGEURTrainer(GGEURConfig(target_per_class=120, keep_augmented=True), FedAvg(), FederatedConfig(rounds=1))
    t.fit(parts)
    hist = parts.histogram()
    for k in range(parts.num_clients):
        aug = t.partitions.augmented(k)
        counts = aug.counts()
        held = {c for c in range(10) if hist[k, c] > 0}
        assert set(counts) == held  # absent classes stay absent
        for c in held:
            assert counts[c] == max(hist[k, c], 120)
        z = np.asarray(parts.client_dataset(k)["embedding"])
        np.testing.assert_allclose(aug.embeddings[: len(z)], z, rtol=1e-6, atol=1e-6)  # real rows kept first (float32)


def test_ggeur_helps_a_label_skewed_federation_and_plugs_into_fedprox():
    train, test = digit_embeddings(n_train=1100)
    parts = _parts(train, alpha=0.1, clients=8, seed=1)
    accs = {}
    for aug in ("none", "ggeur"):
        t = GGEURTrainer(
            GGEURConfig(augment=aug, per_sample=30, lr=1e-2, batch_size=128, local_epochs=2),
            FedAvg(),
            FederatedConfig(rounds=8, seed=0),
            eval_datasets={"test": test},
        )
        accs[aug] = t.fit(parts)[-1]["eval_test_accuracy"]
    assert accs["ggeur"] > accs["none"]
    prox = GGEURTrainer(
        GGEURConfig(per_sample=30, lr=1e-2), FedProx(mu=0.1), FederatedConfig(rounds=1), eval_datasets={"test": test}
    )
    assert 0 < prox.fit(parts)[-1]["eval_test_accuracy"] <= 1


def test_multi_domain_prototypes_bring_missing_classes():
    train, test = digit_embeddings(domains=True)
    parts = DomainPartitioner(num_clients=3, alpha=0.05, seed=0).split(train, domain_column="domain")
    cfg = GGEURConfig(
        mode="multi_domain",
        num_per_sample=2,
        step1_keep=20,
        prototype_draws=20,
        target_per_class=40,
        keep_augmented=True,
    )
    t = GGEURTrainer(cfg, FedAvg(), FederatedConfig(rounds=1))
    t.fit(parts)
    hist = parts.histogram()
    for k in range(3):
        counts = t.partitions.augmented(k).counts()
        assert set(counts) == set(range(10))  # every class, through other domains' prototypes
        for c in range(10):
            assert counts[c] == max(hist[k, c], 40)
    assert set(t.prototypes) == {"d0", "d1", "d2"}


def test_official_compat_changes_training():
    train, test = digit_embeddings()
    parts = _parts(train)
    heads = {}
    for compat in ("correct", "official"):
        t = GGEURTrainer(
            GGEURConfig(compat=compat, per_sample=10),
            FedAvg(weighted=compat == "correct"),
            FederatedConfig(rounds=2, seed=0),
        )
        t.fit(parts)
        heads[compat] = t.head.weight.detach().clone()
    assert not torch.allclose(heads["correct"], heads["official"])


def test_clear_errors():
    train, _ = digit_embeddings()
    with pytest.raises(ValueError, match="GGEURConfig.scale"):
        GGEURConfig(scale="cubic")
    with pytest.raises(ValueError, match="guide_threshold"):
        GGEURConfig(guide_threshold=1.5)
    parts = _parts(train.rename_column("embedding", "features"))
    with pytest.raises(ValueError, match="column 'embedding' not found"):
        GGEURTrainer(GGEURConfig(), FedAvg(), FederatedConfig(rounds=1)).fit(parts)
    with pytest.raises(ValueError, match="DomainPartitioner"):
        GGEURTrainer(GGEURConfig(mode="multi_domain"), FedAvg(), FederatedConfig(rounds=1)).fit(_parts(train))


@pytest.mark.multiprocess
def test_two_processes_pool_the_same_covariance(tmp_path):
    outs = {p: accelerate_launch("tests.ggeur.mp_ggeur", tmp_path / f"g{p}.pt", processes=p) for p in (1, 2)}
    assert outs[2]["world"] == 2
    assert (outs[1]["cov"] - outs[2]["cov"]).abs().max() < 1e-10
    for c in outs[1]["eig"]:
        np.testing.assert_allclose(outs[1]["eig"][c], outs[2]["eig"][c], atol=1e-10)
    for name in outs[1]["head"]:
        assert (outs[1]["head"][name] - outs[2]["head"][name]).abs().max() <= 1e-5
