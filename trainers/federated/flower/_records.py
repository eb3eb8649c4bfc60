"""Conversions between the federated core's objects and Flower records (``ArrayRecord``, ``MetricRecord`` ...)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from hf_trust.errors import HFTrustDataError, HFTrustKeyError

Params = dict[str, torch.Tensor]

#: The example count of a reply on the wire: Flower's own key (its strategies weigh by ``weighted_by_key``, default
#: ``"num-examples"``).  It is read back into the core's ``num_examples`` by :func:`reply_record` only.
NUM_EXAMPLES_KEY = "num-examples"
#: Metric every hf-trust client reports next to ``NUM_EXAMPLES_KEY``: 1 per client.  ``weighted_by_key=UNIT_WEIGHT_KEY``
#: turns any of Flower's weighted strategies (FedAvg, FedProx, FedAdam, Krum's mean ...) into its unweighted form.
UNIT_WEIGHT_KEY = "unit-weight"
#: The reply's ConfigRecord naming the client (partition id) that produced it.
CLIENT_RECORD_KEY = "hf-trust-client"
#: Keys of the train / evaluate ConfigRecord the ServerApp adds for its clients.
JOB_KEY = "hf-trust-job"
SEED_KEY = "hf-trust-seed"
LOCAL_EPOCHS_KEY = "hf-trust-local-epochs"


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; it travels as float32 and is cast back on arrival
        t = t.float()
    return t.numpy()


def params_to_arrays(params: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Trainable parameters → ``ArrayRecord`` (numpy ``.npy`` bytes per tensor, names kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(_to_numpy(v))) for k, v in params.items()})


def arrays_to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in arrays.items()}


def arrays_to_params(arrays: ArrayRecord, like: Optional[Mapping[str, torch.Tensor]] = None) -> Params:
    """``ArrayRecord`` → tensors; with ``like``, each is cast to the reference's dtype (a strategy may return
    float64, e.g. FedAdam) and its keys must match."""
    out = {k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in arrays.items()}
    if like is not None:
        if set(out) != set(like):
            missing, extra = sorted(set(like) - set(out)), sorted(set(out) - set(like))
            raise HFTrustKeyError(
                f"the arrays do not match the model's trainable parameters (missing {missing[:3]}, extra {extra[:3]})."
            )
        out = {k: out[k].to(like[k].dtype).reshape(like[k].shape) for k in like}
    return out


def array_bytes(arrays: ArrayRecord) -> int:
    """Bytes of the tensors (numel × item size), as ``FederatedTrainer`` counts its payloads."""
    return sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize for a in arrays.values())


def wire_bytes(arrays: ArrayRecord) -> int:
    """Bytes of the serialised arrays as Flower ships them (``.npy`` data with headers)."""
    return sum(len(a.data) for a in arrays.values())


def single_array_record(content: RecordDict) -> tuple[str, ArrayRecord]:
    records = content.array_records
    if len(records) != 1:
        raise HFTrustDataError(f"expected exactly one ArrayRecord in the message, found {len(records)}.")
    return next(iter(records.items()))


def merged_config(content: RecordDict) -> dict[str, Any]:
    """All ConfigRecords of a message as one dict (strategies send one)."""
    out: dict[str, Any] = {}
    for rec in content.config_records.values():
        out.update(rec)
    return out


def metric_record(metrics: Mapping[str, Any], num_examples: int) -> MetricRecord:
    """The reply's metrics: ``NUM_EXAMPLES_KEY``, ``unit-weight`` and every finite scalar metric of the client."""
    rec = MetricRecord({NUM_EXAMPLES_KEY: int(num_examples), UNIT_WEIGHT_KEY: 1})
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            continue
        if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
            continue
        rec[str(k)] = float(v) if isinstance(v, (float, np.floating)) else int(v)
    return rec


def reply_record(client: int, content: RecordDict) -> dict[str, Any]:
    """A successful train reply as the core's client record: ``client``, ``num_examples`` and the scalar metrics."""
    rec: dict[str, Any] = {"client": client}
    for mr in content.metric_records.values():
        for key, v in mr.items():
            if isinstance(v, list):
                continue
            rec["num_examples" if key == NUM_EXAMPLES_KEY else key] = v
    return rec


def client_record(partition_id: int, **extra: Any) -> ConfigRecord:
    rec = ConfigRecord({"partition-id": int(partition_id)})
    for k, v in extra.items():
        rec[k] = v
    return rec


def state_to_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def state_from_bytes(blob: bytes) -> dict:
    return torch.load(io.BytesIO(blob), weights_only=False)
