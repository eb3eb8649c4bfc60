"""One federated round, the steps both engines take: the in-process :class:`FederatedTrainer` and Flower's
ServerApp (``flower/``) drive these functions, so that a round means the same thing on either.

Why one module: the two engines once had a seeding, a non-finite check, a weighted mean, a history row and
a checkpoint format each, and every copy drifted.  Here is the only place where

* clients are sampled (:func:`sample_clients`) and seeded (:func:`client_context`: the same client draws the
  same batches and dropout masks on any process or SuperNode);
* a client's update is screened (:func:`screen_update`: a negative weight is fatal, a NaN/inf update is
  rejected like a failed client) and summed in float64 (:class:`WeightedSums`);
* the weighted mean becomes the next global model through the strategy's server step, which is checked like a
  client's update (:func:`server_step`), and a round without a usable client is refused (:func:`check_outcome`);
* the history row is built (:func:`history_row`, :func:`finish_row`) and the round is checkpointed
  (:func:`save_round_checkpoint`, with ``save_total_limit`` retention).

The Flower side only moves these objects in and out of Flower records.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from hf_trust.atomic import atomic_save
from hf_trust.errors import FederationError, HFTrustError

from .checkpoint import begin_checkpoint, checkpoint_dir, finish_checkpoint, prune_checkpoints
from .client import ClientContext
from .strategy import Params, Strategy

logger = logging.getLogger("hf_trust.trainers.federated")


# ---------------------------------------------------------------------- sampling and seeding
def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python runs."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_clients(num_clients: int, config: Any, round_idx: int) -> list[int]:
    """The clients of round ``round_idx`` (0-based): ``config.client_fraction`` of them, by ``config.sampling``."""
    m = max(1, int(round(config.client_fraction * num_clients)))
    if config.sampling == "first" or m == num_clients:
        return list(range(m))
    rng = np.random.default_rng(derived_seed(config.seed, round_idx, 7))
    return sorted(rng.choice(num_clients, size=m, replace=False).tolist())


def client_context(
    *,
    client: int,
    round_idx: int,
    seed: int,
    dataset: Any,
    state: dict,
    global_params: Params,
    strategy: Strategy,
    local_epochs: int,
    client_timeout: Optional[float],
) -> ClientContext:
    """Seed torch for (run seed, round, client) and build the client's :class:`ClientContext`.

    Dropout and any other torch randomness of the client follow the default generator; ``torch.manual_seed``
    would also seed every lazy accelerator backend, which costs more than a small client's whole step.
    """
    s = derived_seed(seed, round_idx, client)
    torch.random.default_generator.manual_seed(s)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(s)
    return ClientContext(
        client_id=client,
        round=round_idx,
        dataset=dataset,
        state=state,
        global_params=global_params,
        strategy=strategy,
        local_epochs=local_epochs,
        generator=torch.Generator().manual_seed(s),
        deadline=time.monotonic() + client_timeout if client_timeout else None,
    )


# ---------------------------------------------------------------------- screening and summing updates
def nonfinite_parameters(params: Mapping[str, torch.Tensor], names: Sequence[str]) -> list[str]:
    """The names among ``names`` whose tensors hold a NaN or an infinity (in the order given).

    Runs once per client per round, so the usual answer ("none") is found with one fused max-|x| over all
    tensors (``torch._foreach_norm`` with ord ∞: a NaN or ±inf makes it non-finite, and unlike a 2-norm it
    cannot overflow on large finite values).  Only when that is non-finite, or the fused call is unavailable
    (mixed devices, integer tensors, another torch), does the exact per-tensor scan run and name the culprits.
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


def failed_record(client: int, exc: BaseException) -> dict[str, Any]:
    """The history record of a client whose training raised (it is dropped from the round)."""
    return {"client": client, "failed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3)}


def nonfinite_record(client: int, bad: Sequence[str]) -> dict[str, Any]:
    """The history record of a client whose update held NaN/inf in the parameters ``bad`` (rejected)."""
    return {
        "client": client,
        "failed": f"NonFiniteUpdate: non-finite values in {list(bad[:3])}; the update was rejected",
    }


class WeightedSums:
    """``Σ w_k θ_k`` per parameter and ``Σ w_k``, in float64, clients in the order added.

    :meth:`flat` packs both into one buffer (one cross-process reduce per round), :meth:`mean` unpacks it.
    """

    def __init__(self, global_params: Params):
        self.like = global_params
        self.keys = list(global_params)
        self.sums = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_params.items()}
        self.weight = torch.zeros((), dtype=torch.float64)

    def add(self, params: Mapping[str, torch.Tensor], weight: float) -> None:
        for name in self.keys:
            self.sums[name].add_(params[name].detach().to(self.sums[name].device), alpha=weight)
        self.weight += weight

    def flat(self) -> torch.Tensor:
        return torch.cat([self.sums[name].flatten() for name in self.keys] + [self.weight.reshape(1)])

    def mean(self, flat: Optional[torch.Tensor] = None) -> tuple[Optional[Params], float]:
        """The weighted mean (in the global parameters' dtypes) and the total weight; ``None`` when it is 0."""
        flat = self.flat() if flat is None else flat
        total = float(flat[-1])
        if total <= 0:
            return None, total
        mean, offset = {}, 0
        for name in self.keys:
            n = self.sums[name].numel()
            mean[name] = (flat[offset : offset + n] / total).reshape(self.sums[name].shape).to(self.like[name].dtype)
            offset += n
        return mean, total


def screen_update(
    strategy: Strategy,
    sums: WeightedSums,
    client: int,
    round_idx: int,
    num_examples: int,
    params: Mapping[str, torch.Tensor],
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """Weigh one client's update and add it to ``sums``, or reject it; returns its history record.

    A negative weight turns the mean into an extrapolation away from that client, never meant: the record
    carries ``fatal`` and :func:`check_outcome` raises (on every rank together, once records are gathered).
    One NaN/inf in one update would make the mean, and so the global model, NaN for every client from then on:
    the update is rejected like a failed client.
    """
    w = strategy.client_weight(num_examples)
    if math.isfinite(w) and w < 0:
        why = (
            f"{type(strategy).__name__}.client_weight(num_examples={num_examples}) returned {w} for client "
            f"{client} in round {round_idx + 1}; client weights must be ≥ 0. Return a non-negative example count "
            f"from the ClientTrainer's fit() and a non-negative weight from the strategy."
        )
        return {"client": client, "failed": f"NegativeWeight: {w}", "fatal": why}
    bad = nonfinite_parameters(params, sums.keys)
    if bad or not math.isfinite(w):
        what = f"non-finite values in {bad[:3]}" if bad else f"non-finite client weight {w}"
        logger.warning("client %d rejected in round %d: %s", client, round_idx, what)
        return {"client": client, "failed": f"NonFiniteUpdate: {what}; the update was rejected"}
    sums.add(params, w)
    return {"client": client, "num_examples": num_examples, **metrics}


def check_outcome(records: list[dict[str, Any]], total: float, round_idx: int, allow_empty: bool) -> None:
    """Refuse a round whose update is not meant: a fatal record, no successful client, or total weight 0."""
    fatal = [r["fatal"] for r in records if "fatal" in r]
    if fatal:
        raise FederationError(fatal[0])
    ok = [r for r in records if "failed" not in r]
    if not ok and not allow_empty:
        reasons = "; ".join(f"client {r['client']}: {r['failed']}" for r in records[:3])
        raise HFTrustError(
            f"no client succeeded in round {round_idx + 1} ({len(records)} sampled; {reasons}), so the "
            f"global model would not change. Fix the failing clients, or set "
            f"FederatedConfig(allow_empty_rounds=True) to keep going through such rounds."
        )
    if ok and total <= 0 and not allow_empty:
        sizes = {r["client"]: r["num_examples"] for r in ok}
        raise FederationError(
            f"the clients that trained in round {round_idx + 1} carry total weight 0 (num_examples by client: "
            f"{sizes}), so the global model would not change. Give the sampled clients data, or set "
            f"FederatedConfig(allow_empty_rounds=True) to keep going through such rounds."
        )


def server_step(strategy: Strategy, global_params: Params, mean: Params, round_idx: int) -> Params:
    """``strategy.server_update``, checked like a client's update.

    A NaN/inf global model would be trained by every client from then on, and each round's clients would be
    blamed for it: raise :class:`FederationError` naming the strategy instead (the caller keeps its global model).
    """
    keys = list(global_params)
    new = strategy.server_update(global_params, mean)
    if set(new) != set(keys):
        raise FederationError(
            f"{type(strategy).__name__}.server_update returned parameters {sorted(set(new) ^ set(keys))[:5]} "
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
        raise FederationError(
            f"the server step of strategy {strategy!r} ({type(strategy).__name__}.server_update) "
            f"returned non-finite values in {bad[:3]} in round {round_idx + 1}; {origin}. The global model "
            f"was left at round {round_idx}. Fix the strategy's server_update (e.g. lower FedOpt's server_lr "
            f"or raise its tau)."
        )
    return new


# ---------------------------------------------------------------------- the history row
def param_bytes(params: Params) -> int:
    return sum(v.numel() * v.element_size() for v in params.values())


def weighted_train_loss(records: list[dict[str, Any]]) -> Optional[float]:
    """The successful clients' ``train_loss`` weighted by ``num_examples`` (``None`` when not every one has it)."""
    ok = [r for r in records if "failed" not in r]
    if not ok or not all("train_loss" in r for r in ok) or sum(r["num_examples"] for r in ok) <= 0:
        return None
    return float(np.average([r["train_loss"] for r in ok], weights=[r["num_examples"] for r in ok]))


def history_row(
    round_idx: int,
    clients: list[int],
    records: list[dict[str, Any]],
    bytes_per_client: int,
    bytes_up: Optional[int] = None,
) -> dict[str, Any]:
    """The columns every engine's history row has (``round`` is 1-based).  ``bytes_up``: the replies' bytes when
    they differ from the global parameters' (default: ``bytes_per_client`` per successful client)."""
    ok = [r for r in records if "failed" not in r]
    return {
        "round": round_idx + 1,
        "clients": list(clients),
        "failed_clients": sorted(r["client"] for r in records if "failed" in r),
        "payload_bytes_up": bytes_per_client * len(ok) if bytes_up is None else int(bytes_up),
        "payload_bytes_down": bytes_per_client * len(clients),
        "train_loss": weighted_train_loss(records),
    }


def evaluate_into(
    row: dict[str, Any], evaluate: Callable[[Any], dict], eval_datasets: Mapping[str, Any], config: Any
) -> None:
    """``eval_<name>_<metric>`` columns every ``config.eval_every`` rounds."""
    if config.eval_every and row["round"] % config.eval_every == 0:
        for name, ds in eval_datasets.items():
            for metric, value in evaluate(ds).items():
                row[f"eval_{name}_{metric}"] = value


def finish_row(row: dict[str, Any], records: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """The last columns: wall seconds and the client records (tracebacks left out), in client order."""
    row["seconds"] = time.time() - started
    row["client_records"] = sorted(({k: v for k, v in r.items() if k != "trace"} for r in records), key=_client_key)
    return row


def _client_key(record: dict[str, Any]) -> Any:
    return record["client"]


# ---------------------------------------------------------------------- checkpoints
def server_state(round_number: int, global_params: Params, strategy_state: dict, history: list, world: int) -> dict:
    """What ``server.pt`` holds: the next round to run, the global model, the strategy's state, the history."""
    return {
        "round": round_number,
        "global_params": global_params,
        "strategy": strategy_state,
        "history": history,
        "world": world,
    }


def save_round_checkpoint(
    output_dir: str | Path,
    round_number: int,
    state: dict,
    extra_files: Optional[Mapping[str, Callable[[Path], None]]] = None,
    save_total_limit: Optional[int] = None,
) -> Path:
    """A one-process complete checkpoint ``checkpoint-<round_number>``: ``server.pt`` (see :func:`server_state`),
    ``extra_files``, then the manifest; older complete checkpoints beyond ``save_total_limit`` are deleted.
    (:meth:`FederatedTrainer.save_checkpoint` writes the same layout plus one client-state file per rank.)"""
    path = begin_checkpoint(checkpoint_dir(output_dir, round_number))
    atomic_save(path / "server.pt", lambda tmp: torch.save(state, tmp))
    for name, write in (extra_files or {}).items():
        atomic_save(path / name, write)
    finish_checkpoint(path, state["round"], state.get("world", 1), ["server.pt", *(extra_files or {})])
    prune_checkpoints(output_dir, save_total_limit)
    return path
