"""The one fingerprint helper: each identity changes exactly when what it identifies changes."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from hf_trust import fingerprint as fp
from hf_trust.errors import HFTrustTypeError


@dataclasses.dataclass
class _Cfg:
    r: int = 4
    lr: float = 1e-3
    names: tuple = ("a", "b")


def test_config_fingerprint_covers_every_field_and_honours_exclude():
    base = fp.config_fingerprint(_Cfg())
    assert fp.config_fingerprint(_Cfg()) == base
    for change in ({"r": 5}, {"lr": 2e-3}, {"names": ("a",)}):
        assert fp.config_fingerprint(_Cfg(**change)) != base, change
    assert fp.config_fingerprint(_Cfg(lr=9.0), exclude=("lr",)) == fp.config_fingerprint(_Cfg(), exclude=("lr",))
    assert fp.config_fingerprint(_Cfg(), seed=1) != fp.config_fingerprint(_Cfg(), seed=2)
    with pytest.raises(HFTrustTypeError, match="dataclass instance or a mapping"):
        fp.config_fingerprint(_Cfg)


def test_file_sha256_equals_hashlib_over_chunks(tmp_path):
    path = tmp_path / "w.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several read chunks
    path.write_bytes(data)
    assert fp.file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_arrays_sha256_sees_dtype_shape_and_bytes_and_takes_0d_tensors():
    a = np.arange(6, dtype=np.float32)
    ref = fp.arrays_sha256(a)
    assert fp.arrays_sha256(a.reshape(2, 3)) != ref
    assert fp.arrays_sha256(a.astype(np.float64)) != ref
    b = a.copy()
    b[3] += 1e-6
    assert fp.arrays_sha256(b) != ref
    t = torch.tensor(3)  # 0-d, as BatchNorm's num_batches_tracked
    assert fp.arrays_sha256(t) != fp.arrays_sha256(torch.tensor(4))


def test_model_identity_exact_and_cheap_follow_the_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    exact, cheap = fp.model_identity(model), fp.model_identity(model, exact=False)
    assert fp.model_identity(model) == exact and fp.model_identity(model, exact=False) == cheap
    with torch.no_grad():
        model[0].weight[0, 0] += 0.5
    assert fp.model_identity(model) != exact
    assert fp.model_identity(model, exact=False) != cheap
    only_bias = fp.model_identity(model, tensors={"b": model[0].bias})
    with torch.no_grad():
        model[0].weight[1, 1] += 0.5
    assert fp.model_identity(model, tensors={"b": model[0].bias}) == only_bias  # only the named tensors count


def test_callable_identity_tells_lambdas_apart():
    f, g = (lambda x: x + 1), (lambda x: x + 2)
    assert fp.callable_identity(f) != fp.callable_identity(g)
    assert fp.callable_identity(f) == fp.callable_identity(f)
