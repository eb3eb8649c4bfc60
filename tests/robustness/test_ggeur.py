"""GGEUR under bad embeddings and labels, and its demo feature cache under stale or corrupt files."""

from __future__ import annotations

import json
import logging
import os
import warnings

import numpy as np
import pytest
from datasets import Dataset

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, PartitionError
from hf_trust.trainers.federated import DirichletLabelPartitioner, FedAvg, FederatedConfig, Partitions
from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer
from tests.ggeur.ggeur_fixtures import digit_embeddings


def _trainer(**kw) -> GGEURTrainer:
    return GGEURTrainer(GGEURConfig(per_sample=5), FedAvg(), FederatedConfig(rounds=1), **kw)


def _with_column(ds: Dataset, name: str, values) -> Dataset:
    return ds.remove_columns(name).add_column(name, list(values))


def test_one_nan_in_one_client_is_a_clear_error_naming_row_and_client():
    train, _ = digit_embeddings(n_train=300)
    z = np.asarray(train["embedding"])
    z[123, 5] = np.nan
    bad = _with_column(train, "embedding", z.tolist())
    parts = DirichletLabelPartitioner(num_clients=4, alpha=0.5, min_size=1, seed=0).split(bad)
    owner = next(k for k, ix in enumerate(parts.indices) if 123 in ix)  # found independently of the trainer
    with pytest.raises(HFTrustDataError, match=rf"NaN/inf in 1 row\(s\) \(first: row 123\).*client {owner}\)"):
        _trainer().fit(parts)


def test_label_minus_one_is_a_clear_error_not_silently_failing_clients():
    train, _ = digit_embeddings(n_train=300)
    y = np.asarray(train["label"])
    y[7] = -1
    bad = _with_column(train, "label", y.tolist())
    # The partitioner refuses it first...
    with pytest.raises(PartitionError, match="negative labels"):
        DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1).split(bad)
    # ...and partitions built by hand reach GGEUR's own check instead of failing inside every client.
    parts = Partitions([np.arange(0, 150), np.arange(150, 300)], y, dataset=bad)
    with pytest.raises(HFTrustDataError, match=r"holds label -1 \(row 7\).*Drop unlabelled rows"):
        _trainer().fit(parts)


def test_eval_embeddings_of_another_width_or_an_unknown_class_are_clear_errors():
    train, test = digit_embeddings(n_train=300)
    parts = DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1).split(train)
    narrow = _with_column(test, "embedding", np.asarray(test["embedding"])[:, :32].tolist())
    with pytest.raises(
        HFTrustDataError, match=r"eval dataset 'test' has width 32 but the training embeddings have width 64"
    ):
        _trainer(eval_datasets={"test": narrow}).fit(parts)
    yt = np.asarray(test["label"])
    yt[0] = 12  # a class that no training row has
    with pytest.raises(HFTrustDataError, match=r"eval dataset 'test' holds class 12.*num_classes=13"):
        _trainer(eval_datasets={"test": _with_column(test, "label", yt.tolist())}).fit(parts)
    with pytest.raises(HFTrustConfigError, match=r"num_classes=5; set num_classes to at least 10"):
        GGEURTrainer(GGEURConfig(num_classes=5), FedAvg(), FederatedConfig(rounds=1)).fit(parts)


def test_eval_class_no_client_holds_warns():
    train, test = digit_embeddings(n_train=300)
    keep = [i for i, c in enumerate(train["label"]) if c != 3]
    parts = DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1).split(train.select(keep))
    with pytest.warns(UserWarning, match=r"classes \[3\] that no client has"):
        _trainer(eval_datasets={"test": test}).fit(parts)


def test_a_class_with_a_single_row_warns_that_its_draws_are_copies():
    # Why: the global shape of a class seen once has zero covariance, so "augmenting" it to 50 rows writes
    # 50 identical rows; this used to happen without a word.
    train, _ = digit_embeddings(n_train=300)
    y = np.asarray(train["label"])
    keep = np.flatnonzero(y != 9).tolist() + [int(np.flatnonzero(y == 9)[0])]
    sub = train.select(keep)
    parts = Partitions([np.arange(0, 150), np.arange(150, len(keep))], np.asarray(sub["label"]), dataset=sub)
    t = GGEURTrainer(GGEURConfig(target_per_class=50, keep_augmented=True), FedAvg(), FederatedConfig(rounds=1))
    with pytest.warns(UserWarning, match=r"class\(es\) \[9\] have a single row in their global shape") as record:
        t.fit(parts)
    assert sum("single row" in str(w.message) for w in record) == 1
    # what the warning describes, recomputed from the augmented rows: 50 rows of class 9, all identical to
    # the one real row
    aug = t.partitions.augmented(1)
    rows = aug.embeddings[aug.labels == 9]
    real = np.asarray(sub["embedding"][-1], dtype=np.float32)
    assert rows.shape == (50, 64) and np.array_equal(rows, np.broadcast_to(real, rows.shape))
    # every other class has many rows: no warning
    parts = DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1, seed=0).split(train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GGEURTrainer(GGEURConfig(target_per_class=50), FedAvg(), FederatedConfig(rounds=1)).fit(parts)


def test_clients_with_embeddings_of_different_widths_are_a_clear_error():
    train, _ = digit_embeddings(n_train=300)
    z, y = np.asarray(train["embedding"]), np.asarray(train["label"])
    # client 0 embedded with a 64-d encoder, client 1 with a 32-d one
    rows = [list(v) for v in z[:150]] + [list(v[:32]) for v in z[150:]]
    ds = Dataset.from_dict({"embedding": rows, "label": y.tolist()})
    parts = Partitions([np.arange(0, 150), np.arange(150, 300)], y, dataset=ds)
    with pytest.raises(HFTrustDataError) as err:
        _trainer().fit(parts)
    msg = str(err.value)
    # names the column, both widths, the odd client and the fix (numpy said only "inhomogeneous shape")
    assert "column 'embedding'" in msg and "widths [32, 64] (width 32: client 1; width 64: client 0)" in msg
    assert "re-embed" in msg
    # a client holding both widths is named under both
    mixed = Partitions([np.arange(0, 100), np.arange(100, 200), np.arange(200, 300)], y, dataset=ds)
    with pytest.raises(HFTrustDataError, match=r"\(width 32: clients \[1, 2\]; width 64: clients \[0, 1\]\)"):
        _trainer().fit(mixed)


# ---------------------------------------------------------------- the demo's feature cache
def _cache(tmp_path, key, calls):
    from hf_trust.demo.studies.ggeur import cached_arrays

    def compute():
        calls.append(1)
        return {"xtr": np.full((3, 2), float(len(calls))), "xte": np.arange(4.0)}

    return cached_arrays(tmp_path, "effnet_test", key, compute)


def test_feature_cache_is_keyed_verified_and_recomputed(tmp_path, caplog):
    calls: list = []
    key = {"encoder": "a" * 64, "size": 32, "data": "d1", "seed": 0}
    first = _cache(tmp_path, key, calls)
    assert len(calls) == 1 and first["xtr"][0, 0] == 1.0
    assert _cache(tmp_path, key, calls)["xtr"][0, 0] == 1.0 and len(calls) == 1  # reused as is
    for field, value in (("encoder", "b" * 64), ("size", 64), ("data", "d2"), ("seed", 1)):
        _cache(tmp_path, {**key, field: value}, calls)  # each determining field gives its own entry
    assert len(calls) == 5
    (path,) = [p for p in tmp_path.glob("effnet_test_*.npz") if _cache_key(p) == key]
    # truncated: recomputed (with a log line), not read as garbage
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="hf_trust.demo.ggeur"):
        again = _cache(tmp_path, key, calls)
    assert len(calls) == 6 and again["xtr"][0, 0] == 6.0 and "cannot be read" in caplog.text
    # a file copied over from other settings under this key's name: detected by the stored key
    other = next(p for p in tmp_path.glob("effnet_test_*.npz") if _cache_key(p) != key)
    os.replace(other, path)
    _cache(tmp_path, key, calls)
    assert len(calls) == 7 and "other settings" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))


def _cache_key(path):
    with np.load(path) as data:
        return json.loads(str(data["__meta__"]))["key"]
