"""The federated training loop: simulation in one process, or clients spread over the processes of
``accelerate launch`` (rank r hosts sampled clients r, r+P, ...).

The per-client model is never wrapped by ``accelerator.prepare``: DDP would all-reduce gradients across
ranks and mix clients hosted on different processes.  Ranks exchange only the round's weighted sums,
with ``accelerator.reduce``, in float64 so that 1 and P processes agree to round-off.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_trust.atomic import atomic_save, atomic_write_text
from hf_trust.errors import (
    FederationError,
    HFTrustCacheError,
    HFTrustConfigError,
    HFTrustTypeError,
    PartitionError,
    require_extra,
)

from .checkpoint import (
    CHECKPOINT_MARKER,
    begin_checkpoint,
    checkpoint_dir,
    finish_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    read_json,
    torch_load,
    verify_checkpoint,
)
from .client import ClientResult, ClientTrainer, load_params, trainable_params
from .partition import Partitions
from .rounds import (
    WeightedSums,
    check_outcome,
    client_context,
    derived_seed,
    evaluate_into,
    failed_record,
    finish_row,
    history_row,
    nonfinite_parameters,
    param_bytes,
    sample_clients,
    screen_update,
    server_state,
    server_step,
)
from .strategy import Params, Strategy

__all__ = [
    "CHECKPOINT_MARKER",
    "FederatedConfig",
    "FederatedTrainer",
    "check_partitions",
    "derived_seed",
    "latest_checkpoint",
    "load_history",
    "nonfinite_parameters",
    "plot_history",
    "read_json",
    "sample_clients",
    "verify_checkpoint",
]

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
        save_total_limit: keep only the N newest complete ``checkpoint-<r>`` folders, deleting older ones after
            each checkpoint (``transformers.Trainer``'s name and meaning; ``None``: keep all).  An interrupted
            checkpoint never counts and never causes a complete one to be deleted.
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
    save_total_limit: Optional[int] = None
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
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise HFTrustConfigError(
                f"FederatedConfig.save_total_limit must be ≥ 1 or None (keep every checkpoint), got "
                f"{self.save_total_limit}; use save_every=0 to write no checkpoints."
            )


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
            raise HFTrustTypeError(
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
        ctx = client_context(
            client=k,
            round_idx=round_idx,
            seed=self.config.seed,
            dataset=partitions.client_dataset(k),
            state=self.client_states.setdefault(k, {}),
            global_params=self.global_params,
            strategy=self.strategy,
            local_epochs=self.config.local_epochs,
            client_timeout=self.config.client_timeout,
        )
        return self.client_trainer.fit(ctx)

    def _load_global_into_model(self) -> None:
        if self.config.execution == "deepspeed":
            self.client_trainer.load_global(self.global_params)
        else:
            load_params(self.client_trainer.model, self.global_params)

    def run_round(self, round_idx: int, partitions: Partitions) -> dict[str, Any]:
        t0 = time.time()
        if self.before_round is not None:
            self.before_round(self, round_idx)
        clients = sample_clients(partitions.num_clients, self.config, round_idx)
        sums = WeightedSums(self.global_params)
        local_records = []
        for k in self.hosted(clients):
            try:
                result = self._train_client(k, round_idx, partitions)
            except Exception as exc:  # a failing client is dropped from the round, the others aggregate
                logger.warning("client %d failed in round %d: %s", k, round_idx, exc)
                local_records.append(failed_record(k, exc))
                continue
            params = dict(self.client_trainer.model.named_parameters())
            local_records.append(
                screen_update(self.strategy, sums, k, round_idx, result.num_examples, params, result.metrics)
            )
        flat = self.reduce_sum(sums.flat())  # one flat buffer: a single reduce per round
        records = sorted(self.gather_objects(local_records), key=lambda r: r["client"])
        mean, total = sums.mean(flat)
        # every rank holds the gathered records, so every rank raises here, together
        check_outcome(records, total, round_idx, self.config.allow_empty_rounds)
        if mean is not None:
            try:
                self.global_params = server_step(self.strategy, self.global_params, mean, round_idx)
            finally:  # on an error the model holds the last client's weights: the last good global model back
                self._load_global_into_model()
        else:
            self._load_global_into_model()
        row = history_row(round_idx, clients, records, param_bytes(self.global_params))
        evaluate_into(row, self.client_trainer.evaluate, self.eval_datasets, self.config)
        return finish_row(row, records, t0)

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
                self.save_checkpoint(checkpoint_dir(out, r + 1))
                if self.accelerator.is_main_process:
                    prune_checkpoints(out, self.config.save_total_limit)
                self.accelerator.wait_for_everyone()
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
        if self.accelerator.is_main_process:
            begin_checkpoint(path)  # overwriting an older checkpoint in place: it stops being "complete" first
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            state = server_state(
                self.start_round, self.global_params, self.strategy.state_dict(), self.history, self.world
            )
            atomic_save(path / "server.pt", lambda tmp: torch.save(state, tmp))
        atomic_save(path / f"clients_rank{self.rank}.pt", lambda tmp: torch.save(self.client_states, tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            files = ["server.pt"] + [f"clients_rank{r}.pt" for r in range(self.world)]
            finish_checkpoint(path, self.start_round, self.world, files)
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
        state = torch_load(path / "server.pt")
        self._check_checkpoint_params(path, state["global_params"])
        self.start_round = state["round"]
        self.global_params = state["global_params"]
        self.strategy.load_state_dict(state["strategy"])
        self.history = state["history"]
        self.client_states = torch_load(path / f"clients_rank{self.rank}.pt")
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
