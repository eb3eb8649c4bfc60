"""Federated prompt learning on Flower (``pip install "hf-trust[flower]"``): only the prompt tensors travel.

A :class:`FederatedPromptTrainer` already freezes CLIP and leaves only the prompts (``prompts.text_*``,
``prompts.vision_*``) with ``requires_grad``; :class:`FlowerPromptFederation` runs its client trainer, strategy and
:class:`FPLConfig` on Flower, so every ``ArrayRecord`` on the wire holds exactly those tensors.  The client applies
the VPTPR projector from the received global prompt (as ``_PromptFederation`` does in-process) and the server
computes the study's update diagnostics from the replies.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from flwr.app import Message

from ..federated import ClientContext
from ..federated.flower import FlowerFederation
from ..federated.flower.client import ClientRuntime, DataSource
from ..federated.flower.strategy import reply_partition
from .client import PromptClientTrainer
from .diagnostics import round_diagnostics, save_diagnostics
from .trainer import FederatedPromptTrainer


class PromptClientRuntime(ClientRuntime):
    """A SuperNode of federated prompt learning: VPTPR's projector from the global prompt before local training."""

    def __init__(self, *args: Any, vptpr: bool = False, vptpr_drop_ratio: float = 0.2, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.vptpr, self.vptpr_drop_ratio = vptpr, vptpr_drop_ratio

    def before_fit(self, ctx: ClientContext, cfg: dict) -> None:
        ct = self.client_trainer
        if isinstance(ct, PromptClientTrainer):
            use = self.vptpr and ctx.round > 0  # no projection in round 0: there is no aggregated prompt yet
            ct.set_global_prompt(ctx.global_params if use else None, self.vptpr_drop_ratio)


class FlowerPromptFederation(FlowerFederation):
    """A :class:`FederatedPromptTrainer`'s federation on Flower.

    Args:
        trainer: the prompt trainer (CLIP, prompts, :class:`FPLConfig`, strategy with its aggregation rule).
        strategy: a Flower strategy; default the trainer's own (core) strategy.
        eval_datasets: default the trainer's.
        kwargs: other :class:`FlowerFederation` options.
    """

    def __init__(
        self,
        trainer: FederatedPromptTrainer,
        strategy: Any = None,
        eval_datasets: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ):
        strategy = strategy if strategy is not None else trainer.federation.strategy
        evals = eval_datasets if eval_datasets is not None else trainer.federation.eval_datasets
        super().__init__(trainer.client_trainer, strategy, trainer.config, evals, **kwargs)
        self.fpl_config = trainer.config
        self.prompt_trainer = trainer
        self.diagnostics: list[dict] = []

    def client_runtime(self, data: DataSource) -> ClientRuntime:
        return PromptClientRuntime(
            self.client_trainer,
            data,
            self.config,
            **self.runtime_options(),
            vptpr=self.fpl_config.vptpr,
            vptpr_drop_ratio=self.fpl_config.vptpr_drop_ratio,
        )

    def serve(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self.diagnostics = []
        history = super().serve(*args, **kwargs)
        out = self.fpl_config.output_dir
        if out and self.diagnostics:
            save_diagnostics(self.diagnostics, out)
        return history

    def on_round_end(self, row: dict[str, Any], start: dict[str, torch.Tensor], replies: list[Message]) -> None:
        if not self.fpl_config.diagnostics:
            return
        deltas: dict[int, dict[str, torch.Tensor]] = {}
        for msg in replies:
            if msg.has_error() or not msg.content.array_records:
                continue
            arrays = next(iter(msg.content.array_records.values()))
            k = reply_partition(msg)
            deltas[k if k is not None else len(deltas)] = {
                n: torch.from_numpy(arrays[n].numpy()).to(start[n].dtype) - start[n] for n in start
            }
        if not deltas:
            return
        global_delta = {n: self.global_params[n] - start[n] for n in start}
        diag = round_diagnostics(deltas, global_delta)
        diag["round"] = row["round"]
        self.diagnostics.append(diag)
        for g, short in (("text", "lpt"), ("vision", "vpt")):
            if g in diag:
                row[f"update_cos_{short}"] = diag[g]["mean_cos_to_global"]
