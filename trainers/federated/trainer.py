"""The federated training loop: simulation in one process, or clients spread over the processes of
``accelerate launch`` (rank r hosts sampled clients r, r+P, ...).

The per-client model is never wrapped by ``accelerator.prepare``: DDP would all-reduce gradients across
ranks and mix clients hosted on different processes.  Ranks exchange only the round's weighted sums,
with ``accelerator.reduce``, in float64 so that 1 and P processes agree to round-off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_trust.atomic import atomic_save, atomic_write_json, atomic_write_text
from hf_trust.errors import (
    FederationError,
    HFTrustCacheError,
    HFTrustConfigError,
    HFTrustError,
    PartitionError,
    require_extra,
)

from .client import ClientContext, ClientResult, ClientTrainer, load_params, trainable_params
from .partition import Partitions
from .strategy import Params, Strategy

logger = logging.getLogger("hf_trust.trainers.federated")


@dataclass
class FederatedConfig:
    """Run-level options of a federation.

    Args:
        rounds: communication rounds.
        local_epochs: passes over each client's data per round.
        client_fraction: fraction of clients sampled each round (at least one).
        sampling: ``"random"`` (seeded per round) or ``"first"`` (the first m clients every round, as some
            reference scripts do).
        seed: seeds client sampling and every client's shuffling.
        client_timeout: seconds a client may train in one round before it is dropped from the round.
        output_dir: where ``history.json``, the partition report, checkpoints and plots go (``None``: nothing saved).
        save_every: checkpoint every n rounds (0: never).
        eval_every: evaluate the global model every n rounds (0: never).
        log_with: accelerate tracker name(s) for per-round metrics (e.g. ``"tensorboard"``).
        execution: ``"clients_per_rank"`` (rank r trains clients r, r+P, ...; sums are reduced) or
            ``"deepspeed"`` (every client is one DeepSpeed job over all ranks, with
            :class:`~hf_trust.trainers.federated.deepspeed_utils.DeepSpeedClientTrainer`).
        allow_empty_rounds: when every sampled client of a round fails (an exception, a timeout or a
            non-finite update) or the ones that trained carry total weight 0 (no rows), ``fit()`` raises :class:`~hf_trust.errors.HFTrustError` by default, because
            a run whose global model never moves would otherwise look like a finished one.  ``True`` keeps
            going instead: the round leaves the global parameters unchanged and is recorded in the history
            with every client under ``failed_clients`` (useful with flaky clients and many rounds).
    """

    rounds: int = 10
    local_epochs: int = 1
    client_fraction: float = 1.0
    sampling: str = "random"
    seed: int = 0
    client_timeout: Optional[float] = None
    output_dir: Optional[str] = None
    save_every: int = 1
    eval_every: int = 1
    log_with: Optional[str] = None
    execution: str = "clients_per_rank"
    allow_empty_rounds: bool = False

    def __post_init__(self):
        if self.execution not in ("clients_per_rank", "deepspeed"):
            raise HFTrustConfigError(
                f"FederatedConfig.execution must be 'clients_per_rank' or 'deepspeed', got {self.execution!r}."
            )
        if self.rounds < 1:
            raise HFTrustConfigError(f"FederatedConfig.rounds must be ≥ 1, got {self.rounds}.")
        if self.local_epochs < 1:
            raise HFTrustConfigError(f"FederatedConfig.local_epochs must be ≥ 1, got {self.local_epochs}.")
        if not 0 < self.client_fraction <= 1:
            raise HFTrustConfigError(f"FederatedConfig.client_fraction must be in (0, 1], got {self.client_fraction}.")
        if self.sampling not in ("random", "first"):
            raise HFTrustConfigError(f"FederatedConfig.sampling must be 'random' or 'first', got {self.sampling!r}.")


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python runs."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_clients(num_clients: int, config: FederatedConfig, round_idx: int) -> list[int]:
    m = max(1, int(round(config.client_fraction * num_clients)))
    if config.sampling == "first" or m == num_clients:
        return list(range(m))
    rng = np.random.default_rng(derived_seed(config.seed, round_idx, 7))
    return sorted(rng.choice(num_clients, size=m, replace=False).tolist())


def check_partitions(partitions: Partitions) -> None:
    """Refuse a partition that cannot be federated as meant, before any client trains.

    Every client empty: the weighted mean has total weight 0 and the global model could never move.  A row
    held by two clients: it is trained on twice per round and counted twice in the weighted mean, which is a
    different federation from the disjoint one a partitioner makes (and breaks the premise that a client's
    data stays with it).  Some clients empty (but not all): legal, since a weighted strategy gives them
    weight 0, but an unweighted one averages their untrained copy of the global model in, so it is a warning.
    """
    sizes = partitions.sizes()
    if sum(sizes) == 0:
        raise PartitionError(
            f"every client of the partition holds 0 rows (sizes {sizes[:8]}{'...' if len(sizes) > 8 else ''}); "
            f"nothing can be trained. Split a non-empty dataset, or check the index arrays given to Partitions(...)."
        )
    rows = np.concatenate([np.asarray(ix, dtype=np.int64).ravel() for ix in partitions.indices])
    values, counts = np.unique(rows, return_counts=True)
    if (counts > 1).any():
        shared = values[counts > 1]
        holders = [k for k, ix in enumerate(partitions.indices) if np.isin(ix, shared[:1]).any()]
        raise PartitionError(
            f"partitions.indices overlap: {len(shared)} row(s) are held by more than one client (e.g. row "
            f"{int(shared[0])} by clients {holders}); each row would be trained on and averaged in more than "
            f"once per round. Give every row to one client (the partitioners in "
            f"hf_trust.trainers.federated.partition always do)."
        )
    empty = [k for k, n in enumerate(sizes) if n == 0]
    if empty:
        logger.warning(
            "clients %s hold 0 rows: they contribute weight 0 to a weighted strategy, and their untrained copy "
            "of the global model to an unweighted one.",
            empty[:8],
        )


def _param_bytes(params: Params) -> int:
    return sum(v.numel() * v.element_size() for v in params.values())


def nonfinite_parameters(params: dict[str, torch.Tensor], names: list[str]) -> list[str]:
    """The names among ``names`` whose tensors hold a NaN or an infinity (in the order given).

    Runs once per client per round, so the usual answer ("none") is found with one fused max-|x| over all
    tensors (``torch._foreach_norm`` with ord ∞: a NaN or ±inf makes it non-finite, and unlike a 2-norm it
    cannot overflow on large finite values).  Only when that is non-finite, or the fused call is unavailable
    (mixed devices, another torch), does the exact per-tensor scan run and name the culprits.
    """
    tensors = [params[name].detach() for name in names]
    if not tensors:
        return []
    try:
        norms = torch._foreach_norm(tensors, math.inf)
        if math.isfinite(torch.stack(norms).max().item()):  # one dtype and device: the common case
            return []
    except (AttributeError, RuntimeError, TypeError):
        pass
    return [name for name, t in zip(names, tensors) if not torch.isfinite(t).all()]


class FederatedTrainer:
    """Runs rounds of: sample clients → local training → weighted reduce → server update → evaluate.

    Args:
        client_trainer: holds the global model and trains it on one client's data (:class:`ClientTrainer`).
        strategy: the server strategy (FedAvg, FedProx, FedOpt...).
        config: :class:`FederatedConfig`.
        eval_datasets: name → dataset evaluated each ``eval_every`` rounds with ``client_trainer.evaluate``
            (e.g. ``{"global": test, "digits_font": test_font}`` for per-domain accuracy).
        accelerator: an ``accelerate.Accelerator``; created when ``None``.  Under ``accelerate launch`` with
            P processes the clients are spread over the ranks.
        before_round: optional ``fn(trainer, round)`` hook (e.g. a method's statistics round).
    """

    def __init__(
        self,
        client_trainer: ClientTrainer,
        strategy: Strategy,
        config: FederatedConfig,
        eval_datasets: Optional[dict[str, Any]] = None,
        accelerator: Any = None,
        before_round: Optional[Callable[[FederatedTrainer, int], None]] = None,
    ):
        if not isinstance(strategy, Strategy):
            raise TypeError(
                f"strategy must be a Strategy (FedAvg(), FedProx(...), ...), got {type(strategy).__name__}."
            )
        if accelerator is None:
            from accelerate import Accelerator

            accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=config.log_with)
        self.accelerator = accelerator
        self.client_trainer = client_trainer
        self.strategy = strategy
        self.config = config
        self.eval_datasets = eval_datasets or {}
        self.before_round = before_round
        reader = getattr(client_trainer, "read_params", None)  # DeepSpeed: gathered from the engine
        self.global_params: Params = reader() if reader else trainable_params(client_trainer.model)
        if not self.global_params:
            raise HFTrustConfigError("the model has no trainable parameters; nothing would be federated.")
        self.client_states: dict[int, dict] = {}
        self.history: list[dict[str, Any]] = []
        self.start_round = 0
        self._trackers_ready = False

    # ------------------------------------------------------------------ multi-process helpers
    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.world > 1 else 0

    @property
    def world(self) -> int:
        # In DeepSpeed execution all ranks train the same client together: no cross-rank client sums.
        return 1 if self.config.execution == "deepspeed" else self.accelerator.num_processes

    def hosted(self, clients: list[int]) -> list[int]:
        """The clients of this round that this process trains (rank r: positions r, r+P, ...)."""
        return clients[self.rank :: self.world] if self.world > 1 else list(clients)

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return tensor
        out = self.accelerator.reduce(tensor.to(self.accelerator.device), reduction="sum")
        return out.cpu()

    def gather_objects(self, items: list) -> list:
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def broadcast_object(self, obj: Any) -> Any:
        """Send rank 0's ``obj`` to every rank (e.g. a server-side eigendecomposition)."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj if self.rank == 0 else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    # ------------------------------------------------------------------ one round
    def _train_client(self, k: int, round_idx: int, partitions: Partitions) -> ClientResult:
        if self.config.execution != "deepspeed":  # the DeepSpeed client loads the global state itself
            load_params(self.client_trainer.model, self.global_params)
        seed = derived_seed(self.config.seed, round_idx, k)
        # dropout and any other torch randomness of this client; torch.manual_seed would also seed every
        # lazy accelerator backend, which costs more than a small client's whole step.
        torch.random.default_generator.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        deadline = time.monotonic() + self.config.client_timeout if self.config.client_timeout else None
        ctx = ClientContext(
            client_id=k,
            round=round_idx,
            dataset=partitions.client_dataset(k),
            state=self.client_states.setdefault(k, {}),
            global_params=self.global_params,
            strategy=self.strategy,
            local_epochs=self.config.local_epochs,
            generator=gen,
            deadline=deadline,
        )
        return self.client_trainer.fit(ctx)

    def run_round(self, round_idx: int, partitions: Partitions) -> dict[str, Any]:
        t0 = time.time()
        if self.before_round is not None:
            self.before_round(self, round_idx)
        clients = sample_clients(partitions.num_clients, self.config, round_idx)
        keys = list(self.global_params)
        sums = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in self.global_params.items()}
        weight = torch.zeros((), dtype=torch.float64)
        local_records = []
        for k in self.hosted(clients):
            try:
                result = self._train_client(k, round_idx, partitions)
            except Exception as exc:  # a failing client is dropped from the round, the others aggregate
                logger.warning("client %d failed in round %d: %s", k, round_idx, exc)
                local_records.append(
                    {"client": k, "failed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3)}
                )
                continue
            w = self.strategy.client_weight(result.num_examples)
            if math.isfinite(w) and w < 0:
                # A negative weight turns the mean into an extrapolation away from that client: never meant.
                # Recorded, then raised on every rank together once the records are gathered.
                why = (
                    f"{type(self.strategy).__name__}.client_weight(num_examples={result.num_examples}) returned "
                    f"{w} for client {k} in round {round_idx + 1}; client weights must be ≥ 0. Return a "
                    f"non-negative example count from the ClientTrainer's fit() and a non-negative weight from "
                    f"the strategy."
                )
                local_records.append({"client": k, "failed": f"NegativeWeight: {w}", "fatal": why})
                continue
            params = dict(self.client_trainer.model.named_parameters())
            bad = nonfinite_parameters(params, keys)
            if bad or not math.isfinite(w):
                # One NaN/inf in one client's update would make the weighted mean, and so the global
                # model, NaN for every client from then on: the update is rejected like a failed client.
                what = f"non-finite values in {bad[:3]}" if bad else f"non-finite client weight {w}"
                logger.warning("client %d rejected in round %d: %s", k, round_idx, what)
                local_records.append({"client": k, "failed": f"NonFiniteUpdate: {what}; the update was rejected"})
                continue
            for name in keys:  # accumulates in float64
                sums[name].add_(params[name].detach().to(sums[name].device), alpha=w)
            weight += w
            local_records.append({"client": k, "num_examples": result.num_examples, **result.metrics})
        # One flat buffer: a single reduce per round.
        flat = torch.cat([sums[name].flatten() for name in keys] + [weight.reshape(1)])
        flat = self.reduce_sum(flat)
        total = float(flat[-1])
        records = sorted(self.gather_objects(local_records), key=lambda r: r["client"])
        fatal = [r["fatal"] for r in records if "fatal" in r]
        if fatal:
            raise FederationError(fatal[0])
        ok = [r for r in records if "failed" not in r]
        if not ok and not self.config.allow_empty_rounds:
            # Every rank holds the gathered records, so every rank raises here, together.
            reasons = "; ".join(f"client {r['client']}: {r['failed']}" for r in records[:3])
            raise HFTrustError(
                f"no client succeeded in round {round_idx + 1} ({len(records)} sampled; {reasons}), so the "
                f"global model would not change. Fix the failing clients, or set "
                f"FederatedConfig(allow_empty_rounds=True) to keep going through such rounds."
            )
        if ok and total <= 0 and not self.config.allow_empty_rounds:
            sizes = {r["client"]: r["num_examples"] for r in ok}
            raise FederationError(
                f"the clients that trained in round {round_idx + 1} carry total weight 0 (num_examples by client: "
                f"{sizes}), so the global model would not change. Give the sampled clients data, or set "
                f"FederatedConfig(allow_empty_rounds=True) to keep going through such rounds."
            )
        if total > 0:
            mean, offset = {}, 0
            for name in keys:
                n = sums[name].numel()
                mean[name] = (
                    (flat[offset : offset + n] / total).reshape(sums[name].shape).to(self.global_params[name].dtype)
                )
                offset += n
            new = self.strategy.server_update(self.global_params, mean)
            self._check_server_step(new, mean, round_idx)
            self.global_params = new
        if self.config.execution == "deepspeed":
            self.client_trainer.load_global(self.global_params)
        else:
            load_params(self.client_trainer.model, self.global_params)
        upload = _param_bytes(self.global_params) * len(ok)
        row: dict[str, Any] = {
            "round": round_idx + 1,
            "clients": clients,
            "failed_clients": [r["client"] for r in records if "failed" in r],
            "payload_bytes_up": upload,
            "payload_bytes_down": _param_bytes(self.global_params) * len(clients),
            "train_loss": float(np.average([r["train_loss"] for r in ok], weights=[r["num_examples"] for r in ok]))
            if ok and all("train_loss" in r for r in ok) and sum(r["num_examples"] for r in ok) > 0
            else None,
        }
        if self.config.eval_every and (round_idx + 1) % self.config.eval_every == 0:
            for name, ds in self.eval_datasets.items():
                for metric, value in self.client_trainer.evaluate(ds).items():
                    row[f"eval_{name}_{metric}"] = value
        row["seconds"] = time.time() - t0
        row["client_records"] = [{k: v for k, v in r.items() if k != "trace"} for r in records]
        return row

    def _check_server_step(self, new: Params, mean: Params, round_idx: int) -> None:
        """The strategy's server step is checked like a client's update: a NaN/inf global model would be
        trained by every client from then on, and each round's clients would be blamed for it."""
        keys = list(self.global_params)
        if set(new) != set(keys):
            raise FederationError(
                f"{type(self.strategy).__name__}.server_update returned parameters {sorted(set(new) ^ set(keys))[:5]} "
                f"that differ from the global model's in round {round_idx + 1}; it must return one tensor per "
                f"global parameter name."
            )
        bad = nonfinite_parameters(new, keys)
        if bad:
            mean_bad = nonfinite_parameters(mean, keys)
            origin = (
                f"the clients' weighted mean was already non-finite in {mean_bad[:3]} (an overflow when cast to "
                f"the parameters' dtype)"
                if mean_bad
                else "the clients' weighted mean it was given was finite"
            )
            # the model holds the last client's weights: put the last good global model back before raising
            if self.config.execution == "deepspeed":
                self.client_trainer.load_global(self.global_params)
            else:
                load_params(self.client_trainer.model, self.global_params)
            raise FederationError(
                f"the server step of strategy {self.strategy!r} ({type(self.strategy).__name__}.server_update) "
                f"returned non-finite values in {bad[:3]} in round {round_idx + 1}; {origin}. The global model "
                f"was left at round {round_idx}. Fix the strategy's server_update (e.g. lower FedOpt's server_lr "
                f"or raise its tau)."
            )

    # ------------------------------------------------------------------ fit / checkpoints
    def fit(self, partitions: Partitions, resume_from: Optional[str] = None) -> list[dict[str, Any]]:
        """Run the remaining rounds; returns the per-round history (also saved as JSON)."""
        if partitions.num_clients < 1:
            raise HFTrustConfigError("no clients in the partition.")
        check_partitions(partitions)
        out = Path(self.config.output_dir) if self.config.output_dir else None
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        if out is not None and self.accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            partitions.save(out / "partition.json")
        if self.config.log_with and not self._trackers_ready:
            self.accelerator.init_trackers("federated", config=asdict(self.config))
            self._trackers_ready = True
        bar = tqdm(
            range(self.start_round, self.config.rounds),
            desc="rounds",
            disable=not self.accelerator.is_main_process,
            leave=False,
        )
        for r in bar:
            row = self.run_round(r, partitions)
            self.history.append(row)
            self.start_round = r + 1
            scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and v is not None}
            if self.config.log_with:
                self.accelerator.log(scalars, step=r + 1)
            bar.set_postfix(
                {k: round(v, 4) for k, v in scalars.items() if k.startswith("eval_") and k.endswith("accuracy")},
                refresh=False,
            )
            if out is not None and self.config.save_every and (r + 1) % self.config.save_every == 0:
                self.save_checkpoint(out / f"checkpoint-{r + 1}")
        if out is not None and self.accelerator.is_main_process:
            atomic_write_text(out / "history.json", json.dumps(self.history, indent=1, default=float))
        return self.history

    def save_checkpoint(self, path: str | Path) -> None:
        """Global parameters, strategy state, history (rank 0) and each rank's client states.

        Every file is written atomically, and ``checkpoint.json`` (the SHA-256 of every file) is written
        last: a checkpoint without it was interrupted and is never resumed from (:func:`latest_checkpoint`
        skips it, :meth:`load_checkpoint` refuses it).
        """
        path = Path(path)
        marker = path / CHECKPOINT_MARKER
        if self.accelerator.is_main_process:
            path.mkdir(parents=True, exist_ok=True)
            # Overwriting an older checkpoint in place: it stops being "complete" before any file changes.
            marker.unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            state = {
                "round": self.start_round,
                "global_params": self.global_params,
                "strategy": self.strategy.state_dict(),
                "history": self.history,
                "world": self.world,
            }
            atomic_save(path / "server.pt", lambda tmp: torch.save(state, tmp))
        atomic_save(path / f"clients_rank{self.rank}.pt", lambda tmp: torch.save(self.client_states, tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            files = ["server.pt"] + [f"clients_rank{r}.pt" for r in range(self.world)]
            atomic_write_json(
                marker,
                {"round": self.start_round, "world": self.world, "sha256": {f: _sha256(path / f) for f in files}},
            )
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (verified against its ``checkpoint.json``)."""
        path = Path(path)
        meta = verify_checkpoint(path)
        if meta["world"] != self.world:
            raise HFTrustConfigError(
                f"checkpoint {path} was written by {meta['world']} process(es); resume with the same number "
                f"(client states live with the rank that hosted them)."
            )
        state = _torch_load(path / "server.pt")
        self._check_checkpoint_params(path, state["global_params"])
        self.start_round = state["round"]
        self.global_params = state["global_params"]
        self.strategy.load_state_dict(state["strategy"])
        self.history = state["history"]
        self.client_states = _torch_load(path / f"clients_rank{self.rank}.pt")
        if self.config.execution == "deepspeed":
            self.client_trainer.load_global(self.global_params)
        else:
            load_params(self.client_trainer.model, self.global_params)

    def _check_checkpoint_params(self, path: Path, saved: Params) -> None:
        """The checkpoint must federate exactly the model's trainable parameters, names and shapes, both ways.

        Otherwise a parameter the checkpoint lacks would silently keep its fresh initialisation and never be
        federated (it is not in the global state), and a wider one fails later in a tensor size mismatch.
        """
        model = self.global_params
        missing = [n for n in model if n not in saved]
        extra = [n for n in saved if n not in model]
        shapes = [
            f"{n}: checkpoint {tuple(saved[n].shape)} vs model {tuple(model[n].shape)}"
            for n in model
            if n in saved and tuple(saved[n].shape) != tuple(model[n].shape)
        ]
        if missing or extra or shapes:
            parts = []
            if missing:
                parts.append(f"trainable in the model but not in the checkpoint: {missing[:10]}")
            if extra:
                parts.append(f"in the checkpoint but not trainable in the model: {extra[:10]}")
            if shapes:
                parts.append(f"shapes differ: {shapes[:10]}")
            raise FederationError(
                f"checkpoint {path} does not fit the model's trainable parameters ({'; '.join(parts)}). Resume "
                f"with the model (and the same frozen/trainable parameters) the checkpoint was written with, or "
                f"start a new run without resume_from."
            )


CHECKPOINT_MARKER = "checkpoint.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=False)
    except Exception as exc:  # truncated or foreign file: name it instead of a pickle traceback
        raise HFTrustCacheError(
            f"cannot read {path} ({type(exc).__name__}: {exc}); the file is truncated or not a federated "
            f"checkpoint file. Resume from an earlier checkpoint-N folder (see latest_checkpoint)."
        ) from exc


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check that ``path`` is a complete, unmodified federated checkpoint; return its ``checkpoint.json``.

    Raises :class:`~hf_trust.errors.HFTrustCacheError` naming the file when the folder is not a
    checkpoint, was interrupted while being written, or a file no longer matches its recorded SHA-256.
    """
    path = Path(path)
    marker = path / CHECKPOINT_MARKER
    if not (path / "server.pt").is_file() and not marker.is_file():
        raise HFTrustCacheError(f"{path} is not a federated checkpoint (no server.pt); pass a checkpoint-N folder.")
    if not marker.is_file():
        raise HFTrustCacheError(
            f"{path} is incomplete (no {CHECKPOINT_MARKER}): the run stopped while writing it. Resume from "
            f"an earlier checkpoint-N folder (latest_checkpoint(output_dir) finds the last complete one)."
        )
    meta = read_json(marker)
    if not isinstance(meta, dict) or not {"round", "world", "sha256"} <= set(meta):
        raise HFTrustCacheError(f"{marker} lacks round/world/sha256; it was not written by save_checkpoint.")
    for name, expected in meta["sha256"].items():
        file = path / name
        if not file.is_file():
            raise HFTrustCacheError(f"{file} is missing from the checkpoint; resume from an earlier checkpoint-N.")
        if _sha256(file) != expected:
            raise HFTrustCacheError(
                f"{file} does not match the SHA-256 recorded in {marker} (the file was truncated or changed "
                f"after the checkpoint was written); resume from an earlier checkpoint-N."
            )
    return meta


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The complete checkpoint of ``output_dir`` with the highest round, or ``None``.

    Interrupted or corrupt ``checkpoint-N`` folders are skipped with a warning, so a run killed while
    checkpointing resumes from the last checkpoint that was written in full.
    """
    found = []
    for child in Path(output_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    for _, child in sorted(found, reverse=True):
        try:
            verify_checkpoint(child)
        except HFTrustCacheError as exc:
            logger.warning("skipping %s: %s", child, exc)
            continue
        return child
    return None


def read_json(path: str | Path) -> Any:
    """Read a JSON file hf-trust wrote (``history.json``, ``partition.json``, markers), naming the file
    when it is truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFTrustCacheError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFTrustCacheError(
            f"{path} is truncated or not JSON ({exc}); it was cut off mid-write by an older version or "
            f"edited by hand. Delete it and re-run the step that writes it."
        ) from exc


def load_history(path: str | Path) -> list[dict[str, Any]]:
    """The per-round history saved as ``history.json`` by :meth:`FederatedTrainer.fit`."""
    history = read_json(path)
    if not isinstance(history, list) or not all(isinstance(r, dict) and "round" in r for r in history):
        raise HFTrustCacheError(f"{path} is not a federated history (a JSON list of rows with a 'round' key).")
    return history


def plot_history(history: list[dict], path: str | Path, metric: str = "accuracy") -> Path:
    """Plot every ``eval_*_<metric>`` column against the round number."""
    require_extra("matplotlib", extra="plots", feature="the federated history plot")
    from matplotlib.figure import Figure

    # A bare Figure draws without pyplot's global state or a backend choice (the caller's stays as it was).
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    keys = sorted({k for row in history for k in row if k.startswith("eval_") and k.endswith(f"_{metric}")})
    for key in keys:
        ax.plot([r["round"] for r in history], [r.get(key) for r in history], label=key[5 : -len(metric) - 1])
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    if keys:
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return Path(path)
