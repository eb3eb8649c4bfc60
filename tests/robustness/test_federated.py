"""The federated core under bad input, failing clients, interrupted writes and a killed process.

Run as a script (``python -m tests.robustness.test_federated child OUT WHICH``) this module is also the
child of the fault-injection test: a federation that kills itself with SIGKILL halfway through writing
one file of its third checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Value

from hf_trust.errors import FederationError, HFTrustCacheError, HFTrustError, PartitionError
from hf_trust.trainers.federated import (
    ClientResult,
    ClientTrainer,
    DirichletLabelPartitioner,
    FedAvg,
    FederatedConfig,
    FederatedTrainer,
    FedOpt,
    Partitions,
    latest_checkpoint,
    load_history,
)
from tests.federated.fed_fixtures import make_client_trainer, make_dataset

ROOT = Path(__file__).resolve().parents[2]


def _parts(seed: int = 1) -> Partitions:
    return DirichletLabelPartitioner(num_clients=4, alpha=0.5, min_size=5, seed=seed).split(make_dataset())


class _Wrap(ClientTrainer):
    """Delegates to a real client trainer; ``after(ctx)`` may spoil the trained model or raise."""

    def __init__(self, inner, after=None, skip=None):
        self.inner, self.model, self.after, self.skip = inner, inner.model, after, skip

    def fit(self, ctx):
        if self.skip is not None and ctx.client_id == self.skip:
            return ClientResult(0)  # the reference: contributes weight 0, as if absent
        result = self.inner.fit(ctx)
        if self.after is not None:
            self.after(ctx, self.model)
        return result

    def evaluate(self, ds):
        return self.inner.evaluate(ds)


# ---------------------------------------------------------------- non-finite updates, empty rounds
def test_nan_client_update_is_rejected_and_recorded():
    def poison(ctx, model):
        if ctx.client_id == 1:
            with torch.no_grad():
                model[0].weight[0, 0] = float("nan")

    parts = _parts()
    bad = FederatedTrainer(_Wrap(make_client_trainer(), poison), FedAvg(), FederatedConfig(rounds=2, seed=0))
    hist = bad.fit(parts)
    assert [r["failed_clients"] for r in hist] == [[1], [1]]
    assert "NonFiniteUpdate" in hist[0]["client_records"][1]["failed"]
    # Independent reference: the same federation in which client 1 simply carries no weight.
    ref = FederatedTrainer(_Wrap(make_client_trainer(), skip=1), FedAvg(), FederatedConfig(rounds=2, seed=0))
    ref.fit(parts)
    for name, p in ref.global_params.items():
        assert torch.isfinite(bad.global_params[name]).all()
        assert torch.equal(p, bad.global_params[name]), name


def test_inf_update_is_rejected_too():
    def blow_up(ctx, model):
        if ctx.client_id == 0:
            with torch.no_grad():
                model[2].bias.fill_(float("inf"))

    t = FederatedTrainer(_Wrap(make_client_trainer(), blow_up), FedAvg(), FederatedConfig(rounds=1, seed=0))
    hist = t.fit(_parts())
    assert hist[0]["failed_clients"] == [0]
    assert all(torch.isfinite(v).all() for v in t.global_params.values())


def _always_fail(ctx, model):
    raise RuntimeError("out of memory")


def test_round_without_a_successful_client_raises_unless_allowed():
    parts = _parts()
    t = FederatedTrainer(_Wrap(make_client_trainer(), _always_fail), FedAvg(), FederatedConfig(rounds=2, seed=0))
    with pytest.raises(HFTrustError, match=r"no client succeeded in round 1.*allow_empty_rounds=True") as err:
        t.fit(parts)
    assert "out of memory" in str(err.value)
    init = {
        k: v.clone()
        for k, v in FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig()).global_params.items()
    }
    allowed = FederatedTrainer(
        _Wrap(make_client_trainer(), _always_fail), FedAvg(), FederatedConfig(rounds=2, seed=0, allow_empty_rounds=True)
    )
    hist = allowed.fit(parts)
    assert [r["failed_clients"] for r in hist] == [[0, 1, 2, 3]] * 2
    for name, p in init.items():  # nothing moved, and the history says why
        assert torch.equal(allowed.global_params[name], p)


# ---------------------------------------------------------------- labels the partitioners cannot use
def test_string_and_float_labels_get_a_clear_error_and_mapping_fixes_it():
    ds = make_dataset(n=60)
    names = ds.map(lambda r: {"label": ["cat", "dog", "emu"][r["label"]]})
    with pytest.raises(PartitionError, match=r"column 'label' holds strings.*class_encode_column"):
        DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1).split(names)
    floats = ds.cast_column("label", Value("float64"))
    with pytest.raises(PartitionError, match=r"column 'label' holds float64 values.*cast_column"):
        DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1).split(floats)
    with pytest.raises(PartitionError, match="negative labels"):
        DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1).split(np.array([-1, 0, 1] * 20))
    # The fix the message names works, and gives the same partition as integer labels with the same classes.
    encoded = names.class_encode_column("label")
    a = DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1, seed=2).split(encoded)
    b = DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=1, seed=2).split(ds)
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices))


# ---------------------------------------------------------------- truncated files name themselves
def _run(out: Path, rounds: int = 2, seed: int = 0, parts_seed: int = 1) -> FederatedTrainer:
    t = FederatedTrainer(
        make_client_trainer(seed=seed), FedAvg(), FederatedConfig(rounds=rounds, seed=0, output_dir=str(out))
    )
    t.fit(_parts(parts_seed))
    return t


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_checkpoint_partition_and_history_are_named(tmp_path):
    out = tmp_path / "run"
    _run(out)
    _truncate(out / "checkpoint-2" / "server.pt")
    fresh = FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig(rounds=3, seed=0))
    with pytest.raises(HFTrustCacheError, match=r"checkpoint-2/server.pt does not match the SHA-256"):
        fresh.fit(_parts(), resume_from=str(out / "checkpoint-2"))
    assert latest_checkpoint(out) == out / "checkpoint-1"  # the intact earlier one is found instead
    # A checkpoint folder whose marker is missing (killed before it was complete) is refused by name.
    (out / "checkpoint-1" / "checkpoint.json").unlink()
    with pytest.raises(HFTrustCacheError, match=r"checkpoint-1 is incomplete"):
        fresh.fit(_parts(), resume_from=str(out / "checkpoint-1"))
    assert latest_checkpoint(out) is None
    _truncate(out / "partition.json")
    with pytest.raises(HFTrustCacheError, match=r"partition.json is truncated"):
        Partitions.load(out / "partition.json", make_dataset()["label"])
    _truncate(out / "history.json")
    with pytest.raises(HFTrustCacheError, match=r"history.json is truncated"):
        load_history(out / "history.json")


@pytest.mark.parametrize("name", ["history.json", "partition.json", "checkpoint-1/server.pt"])
def test_a_crash_while_writing_leaves_the_previous_file_intact(tmp_path, monkeypatch, name):
    """Simulated crash: the fsync of the file being written fails. A plain ``write_text``/``torch.save``
    would already have replaced the previous content; the atomic writer leaves it whole."""
    out = tmp_path / "run"
    _run(out, rounds=1)
    before = (out / name).read_bytes()
    target = Path(name).name
    real_fsync = os.fsync

    def crashing_fsync(fd):
        if f".{target}." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError("simulated crash during write")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", crashing_fsync)
    with pytest.raises(OSError, match="simulated crash"):
        _run(out, rounds=1, seed=5, parts_seed=7)  # other weights, another partition: every file would differ
    assert (out / name).read_bytes() == before
    assert not [p for p in out.rglob("*.tmp")]  # no half file left beside it


# ---------------------------------------------------------------- SIGKILL while checkpointing
def _kill_config(out: Path) -> FederatedConfig:
    return FederatedConfig(rounds=4, seed=0, client_fraction=0.5, output_dir=str(out))


def _kill_trainer(out: Path, init_seed: int = 0) -> FederatedTrainer:
    ct = make_client_trainer(seed=init_seed, optimizer="adam", keep_optimizer_state=True)
    return FederatedTrainer(ct, FedOpt(), _kill_config(out))


def _child(out: str, which: str) -> None:
    """Run the federation; while writing ``which`` of checkpoint-3, write half of it and SIGKILL ourselves."""
    torch.set_num_threads(1)
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        p = Path(f)
        if p.parent.name == "checkpoint-3" and p.name.startswith(f".{which}"):
            import io

            buf = io.BytesIO()
            real_save(obj, buf, *a, **kw)
            with open(p, "wb") as fh:
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **kw)

    torch.save = dying_save
    _kill_trainer(Path(out)).fit(_parts())


@pytest.mark.parametrize("which", ["server.pt", "clients_rank0.pt"])
def test_sigkill_while_checkpointing_resumes_bit_identically(tmp_path, which):
    ref = _kill_trainer(tmp_path / "ref")
    ref.fit(_parts())
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.robustness.test_federated", "child", str(out), which],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # It died inside the write: checkpoint-3 holds only a half temporary file and no marker.
    assert not (out / "checkpoint-3" / "checkpoint.json").exists()
    assert [p.name for p in (out / "checkpoint-3").glob(f".{which}.*")]
    assert latest_checkpoint(out) == out / "checkpoint-2"
    resumed = _kill_trainer(out, init_seed=99)  # other initial weights: everything must come from the checkpoint
    resumed.fit(_parts(), resume_from=str(latest_checkpoint(out)))
    for name, p in ref.global_params.items():
        assert torch.equal(p, resumed.global_params[name]), name

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(resumed.history) == strip(ref.history)
    assert strip(load_history(out / "history.json")) == strip(
        json.loads((tmp_path / "ref" / "history.json").read_text())
    )
    assert latest_checkpoint(out) == out / "checkpoint-4"


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "child":
    _child(sys.argv[2], sys.argv[3])


@pytest.mark.parametrize(
    "case",
    ["clean", "nan", "+inf", "-inf", "huge-finite", "half-nan", "mixed-dtypes", "two-bad"],
)
def test_nonfinite_parameters_matches_an_element_scan(case):
    from hf_trust.trainers.federated.trainer import nonfinite_parameters

    g = torch.Generator().manual_seed(0)
    params = {
        "a": torch.randn(4, 3, generator=g),
        "b": torch.randn(7, generator=g),
        "c": torch.randn(2, 2, generator=g),
    }
    if case == "nan":
        params["b"][3] = float("nan")
    elif case == "+inf":
        params["c"][1, 0] = float("inf")
    elif case == "-inf":
        params["a"][0, 2] = -float("inf")
    elif case == "huge-finite":  # a 2-norm would overflow to inf here and reject a finite update
        params["a"][:] = 3e38
    elif case == "half-nan":
        params = {k: v.half() for k, v in params.items()}
        params["c"][0, 0] = float("nan")
    elif case == "mixed-dtypes":
        params["b"] = params["b"].double()
        params["b"][0] = float("nan")
    elif case == "two-bad":
        params["c"][0, 1] = float("nan")
        params["a"][1, 1] = float("inf")
    names = ["c", "a", "b"]
    expected = [n for n in names if not bool(np.isfinite(params[n].double().numpy()).all())]
    assert nonfinite_parameters(params, names) == expected
    assert nonfinite_parameters(params, []) == []


# ---------------------------------------------------------------- a broken server step, a mismatched checkpoint
class _NanServerStep(FedAvg):
    """FedAvg whose server step returns NaN from round ``at`` on (as an over-large server learning rate would)."""

    def __init__(self, at: int = 1):
        super().__init__()
        self.at, self.calls = at, 0

    def server_update(self, global_params, mean_params):
        self.calls += 1
        out = super().server_update(global_params, mean_params)
        if self.calls >= self.at:
            out["0.weight"] = torch.full_like(out["0.weight"], float("nan"))
        return out

    def __repr__(self) -> str:
        return "_NanServerStep()"


@pytest.mark.parametrize("at", [1, 2])
def test_a_nan_server_step_is_blamed_on_the_strategy_not_the_clients(at):
    """An error, not a warning: a NaN global model is wrong output for every later round.  Before the check
    the first round returned a NaN model with an ordinary history, and longer runs blamed the clients."""
    t = FederatedTrainer(make_client_trainer(), _NanServerStep(at), FederatedConfig(rounds=3, seed=0))
    with pytest.raises(
        FederationError, match=rf"server step of strategy _NanServerStep\(\).*\['0.weight'\] in round {at};"
    ) as err:
        t.fit(_parts())
    assert "mean it was given was finite" in str(err.value) and "client " not in str(err.value)
    assert len(t.history) == at - 1
    # the global model and the client model stay at the last good round
    assert all(torch.isfinite(v).all() for v in t.global_params.values())
    for name, p in t.client_trainer.model.named_parameters():
        assert torch.equal(p.detach(), t.global_params[name])


def test_flower_strategy_blames_a_nan_server_step_on_the_strategy(monkeypatch):
    """The Flower path aggregates through HFTrustStrategy.aggregate_train: the same check, the same error."""
    pytest.importorskip("flwr")
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    # replies built outside a running ServerApp: Flower reads the run id from the task's identity
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)

    from hf_trust.trainers.federated.flower.strategy import HFTrustStrategy

    glob = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.ones(3, dtype=np.float32)}
    strat = HFTrustStrategy(_NanServerStepFlat(), FederatedConfig(rounds=1))
    strat._current = glob
    replies = []
    for pid, n in [(0, 5), (1, 7)]:
        arrays = ArrayRecord({k: Array(v + pid) for k, v in glob.items()})
        content = RecordDict(
            {
                "arrays": arrays,
                "metrics": MetricRecord({"num-examples": n, "train_loss": 0.5}),
                "hf_trust.client": ConfigRecord({"partition-id": pid}),
            }
        )
        replies.append(Message(content=content, dst_node_id=pid + 1, message_type="train"))
    with pytest.raises(FederationError, match=r"server step of strategy _NanServerStepFlat\(\).*\['w'\] in round 1;"):
        strat.aggregate_train(1, replies)
    # the same replies with a plain FedAvg aggregate to the weighted mean (the check lets good steps through)
    plain = HFTrustStrategy(FedAvg(), FederatedConfig(rounds=1))
    plain._current = glob
    out, _ = plain.aggregate_train(1, replies)
    np.testing.assert_allclose(out["w"].numpy(), np.full((2, 3), 7 / 12), rtol=1e-6)


class _NanServerStepFlat(FedAvg):
    def server_update(self, global_params, mean_params):
        out = super().server_update(global_params, mean_params)
        out["w"] = out["w"] * float("nan")
        return out

    def __repr__(self) -> str:
        return "_NanServerStepFlat()"


def _checkpointed(out: Path) -> Path:
    t = FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig(rounds=1, seed=0, output_dir=str(out)))
    t.fit(_parts())
    return out / "checkpoint-1"


def _trainer_with(model: torch.nn.Module, out: Path) -> FederatedTrainer:
    from hf_trust.trainers.federated import SupervisedClientTrainer

    cfg = FederatedConfig(rounds=2, seed=0, output_dir=str(out))
    return FederatedTrainer(SupervisedClientTrainer(model, lr=0.05, batch_size=16), FedAvg(), cfg)


@pytest.mark.parametrize("change", ["extra_layer", "wider", "fewer_trainable"])
def test_resume_into_a_different_model_lists_the_differences(tmp_path, change):
    """An error: an extra layer used to load silently and was never federated (its fresh weights stayed
    local), a wider model failed later in a tensor size mismatch; both directions are checked."""
    ckpt = _checkpointed(tmp_path / "run")
    nn = torch.nn
    if change == "extra_layer":
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3), nn.Linear(3, 3))
        expected = r"trainable in the model but not in the checkpoint: \['3.weight', '3.bias'\]"
    elif change == "wider":
        model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
        expected = r"shapes differ: \['0.weight: checkpoint \(16, 6\) vs model \(32, 6\)'"
    else:
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        model[0].requires_grad_(False)
        expected = r"in the checkpoint but not trainable in the model: \['0.weight', '0.bias'\]"
    t = _trainer_with(model, tmp_path / "resumed")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FederationError, match=expected) as err:
        t.fit(_parts(), resume_from=str(ckpt))
    assert str(ckpt) in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded
    # the matching model resumes
    ok = _trainer_with(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), tmp_path / "ok")
    assert [r["round"] for r in ok.fit(_parts(), resume_from=str(ckpt))] == [1, 2]


# ---------------------------------------------------------------- partitions and weights that cannot be federated
def test_every_client_empty_is_a_partition_error():
    """An error: nothing can train (today's code failed with numpy's 'Weights sum to zero')."""
    ds = make_dataset(n=60)
    empty = Partitions([np.zeros(0, dtype=np.int64)] * 3, np.asarray(ds["label"]), dataset=ds)
    t = FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig(rounds=1, seed=0))
    with pytest.raises(PartitionError, match=r"every client of the partition holds 0 rows \(sizes \[0, 0, 0\]\)"):
        t.fit(empty)


def test_sampled_clients_with_zero_weight_raise_unless_allowed():
    """An error by default, like a round in which every client failed: the global model cannot move.
    Client 0 is empty and is the only one sampled ("first", fraction 1/3)."""
    ds = make_dataset(n=60)
    parts = Partitions(
        [np.zeros(0, dtype=np.int64), np.arange(0, 30), np.arange(30, 60)], np.asarray(ds["label"]), dataset=ds
    )
    cfg = dict(rounds=1, seed=0, client_fraction=1 / 3, sampling="first")
    t = FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig(**cfg))
    with pytest.raises(FederationError, match=r"round 1 carry total weight 0 \(num_examples by client: \{0: 0\}\)"):
        t.fit(parts)
    allowed = FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig(allow_empty_rounds=True, **cfg))
    init = {k: v.clone() for k, v in allowed.global_params.items()}
    (row,) = allowed.fit(parts)
    assert row["train_loss"] is None
    assert all(torch.equal(init[k], v) for k, v in allowed.global_params.items())


def test_overlapping_client_indices_are_refused():
    """An error: a row held by two clients is trained on and averaged in twice per round."""
    ds = make_dataset(n=60)
    parts = Partitions([np.arange(0, 35), np.arange(30, 60)], np.asarray(ds["label"]), dataset=ds)
    t = FederatedTrainer(make_client_trainer(), FedAvg(), FederatedConfig(rounds=1, seed=0))
    with pytest.raises(
        PartitionError, match=r"5 row\(s\) are held by more than one client \(e.g. row 30 by clients \[0, 1\]\)"
    ):
        t.fit(parts)


class _NegativeWeight(FedAvg):
    def client_weight(self, num_examples: int) -> float:
        return -float(num_examples) if num_examples % 2 else float(num_examples)


def test_a_negative_client_weight_is_refused():
    """An error naming the strategy, the client and the weight: a negative weight extrapolates away from
    a client, which no strategy means to do (it used to be accepted)."""
    parts = _parts()
    odd = [k for k, n in enumerate(parts.sizes()) if n % 2]
    assert odd, "the partition needs a client with an odd size"
    t = FederatedTrainer(make_client_trainer(), _NegativeWeight(), FederatedConfig(rounds=1, seed=0))
    n = parts.sizes()[odd[0]]
    with pytest.raises(
        FederationError,
        match=rf"_NegativeWeight.client_weight\(num_examples={n}\) returned -{n}.0 for client {odd[0]} in round 1; "
        r"client weights must be ≥ 0",
    ):
        t.fit(parts)
