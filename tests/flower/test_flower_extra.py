"""The [flower] extra: a clear error without it; flwr_datasets partitioner interop (α and seed semantics)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np
import pytest

from hf_trust.errors import MissingExtraError
from hf_trust.trainers.federated import DirichletLabelPartitioner
from tests.federated.fed_fixtures import make_dataset


def _forget(monkeypatch, *prefixes):
    """Drop modules from sys.modules for this test only (monkeypatch puts the real ones back)."""
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            monkeypatch.delitem(sys.modules, name)


def test_without_flwr_the_import_names_the_extra(monkeypatch):
    _forget(monkeypatch, "flwr", "hf_trust.trainers.federated.flower")
    monkeypatch.setitem(sys.modules, "flwr", None)  # what `import flwr` sees when it is not installed
    with pytest.raises(MissingExtraError, match=r'pip install "hf-trust\[flower\]"') as info:
        importlib.import_module("hf_trust.trainers.federated.flower")
    assert isinstance(info.value, ImportError)  # `except ImportError` keeps working
    # the federated core itself needs no Flower
    importlib.import_module("hf_trust.trainers.federated")


def test_without_ray_the_simulation_names_the_extra(monkeypatch):
    pytest.importorskip("flwr")
    from hf_trust.trainers.federated.flower import FlowerFederation
    from tests.federated.fed_fixtures import make_client_trainer
    from tests.flower.flower_fixtures import core_data

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == "ray" else real(name, *a, **k)
    )
    _, parts = core_data()
    with pytest.raises(MissingExtraError, match=r"hf-trust\[flower\]"):
        FlowerFederation(make_client_trainer()).run_simulation(parts)


def test_without_flwr_datasets_the_interop_names_it(monkeypatch):
    pytest.importorskip("flwr")
    importlib.import_module("hf_trust.trainers.federated.flower.datasets")  # so that the real one is restored
    _forget(monkeypatch, "flwr_datasets", "hf_trust.trainers.federated.flower.datasets")
    monkeypatch.setitem(sys.modules, "flwr_datasets", None)
    interop = importlib.import_module("hf_trust.trainers.federated.flower.datasets")
    ds = make_dataset(n=60)
    parts = DirichletLabelPartitioner(num_clients=2, alpha=1.0, min_size=1).split(ds)
    with pytest.raises(MissingExtraError, match="flwr-datasets"):
        interop.partitions_to_flwr(parts)


# ---------------------------------------------------------------------- flwr_datasets interop
@pytest.fixture
def interop():
    pytest.importorskip("flwr")
    pytest.importorskip("flwr_datasets")
    return importlib.import_module("hf_trust.trainers.federated.flower.datasets")


def test_our_partition_as_a_flwr_datasets_partitioner_serves_the_same_rows(interop):
    from flwr_datasets.partitioner import Partitioner

    ds = make_dataset(n=300).add_column("rid", list(range(300)))
    parts = DirichletLabelPartitioner(num_clients=5, alpha=0.3, min_size=5, seed=1).split(ds)
    theirs = interop.partitions_to_flwr(parts)
    assert isinstance(theirs, Partitioner) and theirs.num_partitions == 5
    for k in range(5):
        assert theirs.load_partition(k)["rid"] == parts.indices[k].tolist()
    back = interop.partitions_from_flwr(theirs)
    assert all(np.array_equal(a, b) for a, b in zip(back.indices, parts.indices))


def test_a_flwr_datasets_partitioner_becomes_our_partitions(interop):
    from flwr_datasets.partitioner import DirichletPartitioner

    ds = make_dataset(n=400)
    theirs = DirichletPartitioner(num_partitions=4, partition_by="label", alpha=0.5, min_partition_size=5, seed=7)
    parts = interop.partitions_from_flwr(theirs, ds)
    allix = np.concatenate(parts.indices)
    assert len(allix) == 400 and len(np.unique(allix)) == 400
    assert parts.method == "flwr_datasets.DirichletPartitioner" and parts.params["seed"] == 7
    # the same rows as the partitioner hands out itself (same settings, same seed)
    again = DirichletPartitioner(num_partitions=4, partition_by="label", alpha=0.5, min_partition_size=5, seed=7)
    again.dataset = ds.add_column("rid", list(range(400)))
    for k in range(4):
        assert sorted(again.load_partition(k)["rid"]) == parts.indices[k].tolist()
    assert parts.histogram().sum() == 400 and parts.client_dataset(0).num_rows == len(parts.indices[0])


def test_dirichlet_settings_translate_both_ways_and_refuse_what_does_not_fit(interop):
    ours = DirichletLabelPartitioner(num_clients=6, alpha=0.3, min_size=7, seed=11)
    theirs = interop.dirichlet_to_flwr(ours)
    assert (theirs._num_partitions, float(theirs._alpha[0]), theirs._min_partition_size, theirs._seed) == (
        6,
        0.3,
        7,
        11,
    )
    assert theirs._self_balancing
    assert interop.dirichlet_from_flwr(theirs) == ours
    with pytest.raises(ValueError, match="min_per_class"):
        interop.dirichlet_to_flwr(DirichletLabelPartitioner(num_clients=2, alpha=1.0, min_per_class=1))
    with pytest.raises(ValueError, match="inf"):
        interop.dirichlet_to_flwr(DirichletLabelPartitioner(num_clients=2, alpha=float("inf")))
    from flwr_datasets.partitioner import DirichletPartitioner

    with pytest.raises(ValueError, match="self_balancing"):
        interop.dirichlet_from_flwr(DirichletPartitioner(num_partitions=2, partition_by="label", alpha=1.0))
    with pytest.raises(ValueError, match="per-client alpha"):
        interop.dirichlet_from_flwr(
            DirichletPartitioner(num_partitions=2, partition_by="label", alpha=[0.1, 1.0], self_balancing=True)
        )


def _skew_stats(parts) -> np.ndarray:
    hist = parts.histogram().astype(float)
    share = hist / hist.sum(1, keepdims=True)
    sizes = hist.sum(1)
    return np.array([share.max(1).mean(), (share >= 0.05).sum(1).mean(), sizes.std() / sizes.mean()])


def test_same_alpha_gives_the_same_skew_statistics_but_the_same_seed_not_the_same_rows(interop):
    ds = make_dataset(n=3000, classes=10)
    seeds = range(6)
    table = {}
    for alpha in (0.1, 1.0, 10.0):
        ours = [_skew_stats(DirichletLabelPartitioner(10, alpha, min_size=5, seed=s).split(ds)) for s in seeds]
        theirs = [
            _skew_stats(
                interop.partitions_from_flwr(
                    interop.dirichlet_to_flwr(DirichletLabelPartitioner(10, alpha, min_size=5, seed=s)), ds
                )
            )
            for s in seeds
        ]
        table[alpha] = (np.mean(ours, 0), np.mean(theirs, 0))
    for alpha, (o, t) in table.items():
        # max class share per client and classes held (≥ 5 % of a client's rows): same α, same label skew
        assert abs(o[0] - t[0]) < 0.06, (alpha, o, t)
        assert abs(o[1] - t[1]) < 0.6, (alpha, o, t)
    # and both move the same way with α: concentrated at 0.1, near-IID at 10
    for side in (0, 1):
        assert table[0.1][side][0] > table[1.0][side][0] > table[10.0][side][0]
        assert table[10.0][side][1] > 9.0
    # documented: the same seed does not give the same partition
    ours = DirichletLabelPartitioner(10, 1.0, min_size=5, seed=0)
    a = ours.split(ds)
    b = interop.partitions_from_flwr(interop.dirichlet_to_flwr(ours), ds)
    assert not all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices))
