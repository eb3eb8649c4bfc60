"""Local prompt training on one client, on the federated core's :class:`SupervisedClientTrainer`."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from hf_trust.errors import HFTrustDataError, HFTrustKeyError
from hf_trust.trainers.federated import ClientContext, ClientResult, SupervisedClientTrainer
from hf_trust.trainers.federated.client import num_rows

from .nullspace import ProjectedOptimizer, null_space_projector
from .prompts import CLIPPromptModel


class PromptClientTrainer(SupervisedClientTrainer):
    """Trains the prompts of a :class:`CLIPPromptModel` on ``(pixel_values, label)`` rows.

    Besides the core's local loop it (a) optionally projects vision-prompt updates (VPTPR), (b) keeps
    each client's update of the round for the diagnostics, and (c) evaluates with the class text features
    computed once per evaluation.
    """

    def __init__(
        self,
        model: CLIPPromptModel,
        lr: float,
        batch_size: int,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        eval_batch_size: int = 128,
        input_column: str = "pixel_values",
        label_column: str = "label",
        device: Optional[torch.device] = None,
    ):
        super().__init__(
            model,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            weight_decay=weight_decay,
            input_column=input_column,
            label_column=label_column,
            batch_to_inputs=self._inputs,
            loss_fn=self._loss,
            device=device,
        )
        self.eval_batch_size = eval_batch_size
        self.projectors: dict[str, torch.Tensor] = {}
        self.deltas: dict[int, dict[str, torch.Tensor]] = {}
        self.last_deltas: dict[int, dict[str, torch.Tensor]] = {}  # the previous round's, for inspection

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        for col in (self.input_column, self.label_column):
            if col not in batch:
                raise HFTrustKeyError(
                    f"the client data has no {col!r} column (has {sorted(batch)}); preprocess images "
                    f"into {self.input_column!r} (float, C x H x W) and keep {self.label_column!r}."
                )
        x = batch[self.input_column]
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(batch[self.label_column]), dtype=torch.long)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.model.num_classes):
            raise HFTrustDataError(
                f"labels must lie in [0, {self.model.num_classes}); got {int(y.min())}..{int(y.max())}."
            )
        return x, y

    @staticmethod
    def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return nn.functional.cross_entropy(logits, y), logits

    def set_global_prompt(self, global_params: Optional[dict[str, torch.Tensor]], drop_ratio: float) -> None:
        """VPTPR: projectors of every vision prompt from the current global prompt (``None``: no projection)."""
        self.projectors = {}
        if global_params is None:
            return
        for name, value in global_params.items():
            if name.split(".")[-1].startswith("vision_"):
                self.projectors[name] = null_space_projector(value, drop_ratio)

    def _make_optimizer(self, params) -> Any:
        opt = super()._make_optimizer(params)
        if not self.projectors:
            return opt
        named = dict(self.model.named_parameters())
        return ProjectedOptimizer(opt, {named[n]: p for n, p in self.projectors.items()})

    def fit(self, ctx: ClientContext) -> ClientResult:
        self.model.clear_cache()
        result = super().fit(ctx)
        named = dict(self.model.named_parameters())
        self.deltas[ctx.client_id] = {
            n: (named[n].detach() - g.to(named[n].device)).cpu().clone() for n, g in ctx.global_params.items()
        }
        self.model.clear_cache()
        return result

    @torch.no_grad()
    def evaluate(self, dataset: Any) -> dict[str, float]:
        model = self.model.to(self.device).eval()
        model.clear_cache()
        text = model.cached_text_features()
        correct, total, loss = 0, 0, 0.0
        n = num_rows(dataset)
        for start in range(0, n, self.eval_batch_size):
            rows = list(range(start, min(n, start + self.eval_batch_size)))
            batch = dataset[rows] if not isinstance(dataset, dict) else {k: v[rows] for k, v in dataset.items()}
            x, y = self._inputs(batch)
            logits = model(x.to(self.device), text_features=text)
            y = y.to(self.device)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            total += len(y)
        model.clear_cache()
        return {"accuracy": correct / max(total, 1), "loss": loss / max(total, 1)}
