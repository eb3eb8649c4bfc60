"""What runs on a client: local training of the trainable parameters on the client's data."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from hf_trust.errors import ClientTimeout, HFTrustConfigError, HFTrustKeyError

from .strategy import Params, Strategy


def trainable_params(model: nn.Module) -> Params:
    """The parameters that travel: only those with ``requires_grad``."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_params(model: nn.Module, params: Params) -> None:
    named = dict(model.named_parameters())
    missing = [k for k in params if k not in named]
    if missing:
        raise HFTrustKeyError(f"parameters {missing[:3]} are not in the model; the global state does not match it.")
    with torch.no_grad():
        for k, v in params.items():
            named[k].copy_(v.to(named[k].device, named[k].dtype))


def num_rows(dataset: Any) -> int:
    """Rows of a ``datasets.Dataset``, a sequence, or a dict of equally long columns."""
    if isinstance(dataset, dict):
        return len(next(iter(dataset.values()))) if dataset else 0
    return len(dataset)


@dataclass
class ClientContext:
    """Everything a client's round needs.

    Attributes:
        client_id / round: who and when.
        dataset: the client's data (a ``datasets.Dataset`` slice or anything the client trainer takes).
        state: this client's persistent state (optimizer state, counters); survives rounds and checkpoints.
        global_params: the global trainable parameters the round started from.
        strategy: the server strategy (for its client loss term).
        local_epochs: passes over the local data.
        generator: a ``torch.Generator`` seeded by (run seed, round, client), so a client's shuffling does not
            depend on which process hosts it.
        deadline: ``time.monotonic()`` value after which :meth:`check_deadline` raises.
    """

    client_id: int
    round: int
    dataset: Any
    state: dict
    global_params: Params
    strategy: Strategy
    local_epochs: int
    generator: torch.Generator
    deadline: Optional[float] = None

    def extra_loss(self, model: nn.Module) -> Optional[torch.Tensor]:
        params = {n: p for n, p in model.named_parameters() if n in self.global_params}
        return self.strategy.client_loss_term(params, self.global_params)

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ClientTimeout(f"client {self.client_id} ran past its time limit in round {self.round}.")


@dataclass
class ClientResult:
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class ClientTrainer:
    """The per-client training interface of :class:`FederatedTrainer`.

    Subclasses hold the model (``self.model``, the one global module: the trainer loads the global
    trainable parameters into it before each client) and implement :meth:`fit`, which trains
    ``self.model`` in place on ``ctx.dataset``.  :meth:`evaluate` measures the current model on a dataset.
    """

    model: nn.Module

    def fit(self, ctx: ClientContext) -> ClientResult:
        raise NotImplementedError

    def evaluate(self, dataset: Any) -> dict[str, float]:
        raise NotImplementedError


class SupervisedClientTrainer(ClientTrainer):
    """Minibatch training of a classifier on ``(features, label)`` rows.

    Args:
        model: the module; only parameters with ``requires_grad`` are trained and sent.
        batch_to_inputs: maps a batch (dict of columns from the dataset) to ``(inputs, labels)``; the
            default reads ``input_column`` and ``label_column`` as tensors.
        loss_fn: ``loss_fn(model, inputs, labels) -> (loss, logits)``; default cross-entropy on ``model(inputs)``.
        optimizer: ``"sgd"`` or ``"adam"``, a fresh optimiser each round unless ``keep_optimizer_state``.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.01,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        input_column: str = "x",
        label_column: str = "label",
        batch_to_inputs: Optional[Callable[[dict], tuple[Any, torch.Tensor]]] = None,
        loss_fn: Optional[Callable[[nn.Module, Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = None,
        keep_optimizer_state: bool = False,
        device: Optional[torch.device] = None,
    ):
        if optimizer not in ("sgd", "adam"):
            raise HFTrustConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}.")
        self.model = model
        self.lr, self.batch_size, self.optimizer = lr, batch_size, optimizer
        self.momentum, self.weight_decay = momentum, weight_decay
        self.input_column, self.label_column = input_column, label_column
        self.batch_to_inputs = batch_to_inputs or self._default_inputs
        self.loss_fn = loss_fn or self._default_loss
        self.keep_optimizer_state = keep_optimizer_state
        self.device = device or torch.device("cpu")

    def _default_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(batch[self.input_column], dtype=torch.float32)
        y = torch.as_tensor(batch[self.label_column], dtype=torch.long)
        return x, y

    @staticmethod
    def _default_loss(model: nn.Module, x: Any, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return nn.functional.cross_entropy(logits, y), logits

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _batches(self, dataset: Any, generator: Optional[torch.Generator]):
        n = num_rows(dataset)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, self.batch_size):
            rows = order[start : start + self.batch_size].tolist()
            yield dataset[rows] if not isinstance(dataset, dict) else {k: v[rows] for k, v in dataset.items()}

    def fit(self, ctx: ClientContext) -> ClientResult:
        model = self.model.train()
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = self._make_optimizer(params)
        if self.keep_optimizer_state and "optimizer" in ctx.state:
            opt.load_state_dict(ctx.state["optimizer"])
        total, seen, correct = 0.0, 0, 0
        for _ in range(ctx.local_epochs):
            for batch in self._batches(ctx.dataset, ctx.generator):
                ctx.check_deadline()
                x, y = self.batch_to_inputs(batch)
                x = x.to(self.device) if isinstance(x, torch.Tensor) else x
                y = y.to(self.device)
                loss, logits = self.loss_fn(model, x, y)
                extra = ctx.extra_loss(model)
                if extra is not None:
                    loss = loss + extra
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(y)
                seen += len(y)
                correct += int((logits.argmax(-1) == y).sum())
        if self.keep_optimizer_state:
            ctx.state["optimizer"] = opt.state_dict()
        return ClientResult(
            num_rows(ctx.dataset), {"train_loss": total / max(seen, 1), "train_accuracy": correct / max(seen, 1)}
        )

    @torch.no_grad()
    def evaluate(self, dataset: Any) -> dict[str, float]:
        model = self.model.to(self.device).eval()
        correct, total, loss = 0, 0, 0.0
        for batch in self._batches(dataset, None):
            x, y = self.batch_to_inputs(batch)
            x = x.to(self.device) if isinstance(x, torch.Tensor) else x
            y = y.to(self.device)
            batch_loss, logits = self.loss_fn(model, x, y)
            correct += int((logits.argmax(-1) == y).sum())
            loss += float(batch_loss) * len(y)
            total += len(y)
        return {"accuracy": correct / max(total, 1), "loss": loss / max(total, 1)}
