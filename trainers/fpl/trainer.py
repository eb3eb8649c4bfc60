"""FederatedPromptTrainer: the federated core running LPT / VPT / both on a frozen CLIP."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from hf_trust.trainers.federated import FedAvg, FederatedTrainer, Partitions, Strategy

from .client import PromptClientTrainer
from .config import FPLConfig, FPLConfigError, PromptConfig
from .diagnostics import round_diagnostics, save_diagnostics, summarize
from .prompts import CLIPPromptModel


class _PromptFederation(FederatedTrainer):
    """The core's round plus the study's extras around it: the VPTPR projector from the global prompt
    before local training, and the update diagnostics after aggregation."""

    def __init__(self, *args: Any, fpl_config: FPLConfig, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fpl_config = fpl_config
        self.diagnostics: list[dict] = []

    def run_round(self, round_idx: int, partitions: Partitions) -> dict[str, Any]:
        ct = self.client_trainer
        if not isinstance(ct, PromptClientTrainer):  # DeepSpeed execution: the core's round as is
            return super().run_round(round_idx, partitions)
        start = {k: v.detach().clone() for k, v in self.global_params.items()}
        # no transform in round 0: there is no aggregated prompt yet
        use_proj = self.fpl_config.vptpr and round_idx > 0
        ct.set_global_prompt(start if use_proj else None, self.fpl_config.vptpr_drop_ratio)
        ct.deltas = {}
        row = super().run_round(round_idx, partitions)
        if self.fpl_config.diagnostics:
            deltas: dict[int, dict[str, torch.Tensor]] = {}
            for part in self.gather_objects([ct.deltas]):
                deltas.update(part)
            if deltas:
                global_delta = {k: self.global_params[k].detach().cpu() - start[k].cpu() for k in start}
                diag = round_diagnostics(deltas, global_delta)
                diag["round"] = round_idx + 1
                self.diagnostics.append(diag)
                for g, short in (("text", "lpt"), ("vision", "vpt")):
                    if g in diag:
                        row[f"update_cos_{short}"] = diag[g]["mean_cos_to_global"]
        ct.last_deltas, ct.deltas = ct.deltas, {}
        return row


class FederatedPromptTrainer:
    """Federated prompt learning on a frozen ``transformers.CLIPModel`` (LPT, VPT or both).

    Args:
        clip_model: the frozen CLIP (``CLIPModel``); only the prompts are trained and sent.
        class_names: one name per label, in label order.
        prompt: :class:`PromptConfig`.
        strategy: a federated-core strategy (default ``FedAvg()``); ``config.aggregation`` may override
            its weighting.
        config: :class:`FPLConfig` (rounds, local epochs, client fraction, optimiser, VPTPR, ...).
        tokenizer: the CLIP tokenizer used to build the class prompts (or pass ``class_input_ids``).
        eval_datasets: name -> dataset with ``pixel_values`` and ``label``; e.g. the global test set and
            each domain's test split.
        accelerator: an ``accelerate.Accelerator`` (created when ``None``).

    Example::

        trainer = FederatedPromptTrainer(clip, class_names, prompt=PromptConfig(kind="both"),
                                         config=FPLConfig(rounds=50), tokenizer=tok,
                                         eval_datasets={"test": test})
        history = trainer.fit(partitions)
        trainer.save_prompts("out/prompts")
    """

    def __init__(
        self,
        clip_model: torch.nn.Module,
        class_names: Optional[Sequence[str]],
        prompt: Optional[PromptConfig] = None,
        strategy: Optional[Strategy] = None,
        config: Optional[FPLConfig] = None,
        tokenizer: Any = None,
        eval_datasets: Optional[dict[str, Any]] = None,
        accelerator: Any = None,
        class_input_ids: Optional[torch.Tensor] = None,
        class_attention_mask: Optional[torch.Tensor] = None,
    ):
        self.prompt = prompt or PromptConfig()
        self.config = config or FPLConfig()
        if not isinstance(self.config, FPLConfig):
            raise FPLConfigError("config must be an FPLConfig (it extends FederatedConfig with the local optimiser).")
        strategy = strategy if strategy is not None else FedAvg()
        if self.config.aggregation is not None:
            weighted = self.config.aggregation == "weight"
            strategy = (
                dataclasses.replace(strategy, weighted=weighted) if dataclasses.is_dataclass(strategy) else strategy
            )
            strategy.weighted = weighted
        self.model = CLIPPromptModel(
            clip_model,
            class_names,
            self.prompt,
            tokenizer=tokenizer,
            class_input_ids=class_input_ids,
            class_attention_mask=class_attention_mask,
        )
        self.client_trainer = self._client_trainer(accelerator, next(clip_model.parameters()).device)
        self.federation = _PromptFederation(
            self.client_trainer,
            strategy,
            self.config,
            eval_datasets=eval_datasets,
            accelerator=accelerator,
            fpl_config=self.config,
        )

    def _client_trainer(self, accelerator: Any, device: torch.device) -> Any:
        """The local trainer of every client: the prompt trainer, or one DeepSpeed job over all ranks."""
        if self.config.execution != "deepspeed":
            return PromptClientTrainer(
                self.model,
                lr=self.config.lr,
                batch_size=self.config.batch_size,
                optimizer=self.config.optimizer,
                momentum=self.config.momentum,
                weight_decay=self.config.weight_decay,
                eval_batch_size=self.config.eval_batch_size,
                device=device,
            )
        # every client is one DeepSpeed job over all ranks (the core's DeepSpeedClientTrainer: plain SGD,
        # no VPTPR projection and no update diagnostics on this path)
        from hf_trust.trainers.federated import DeepSpeedClientTrainer

        if accelerator is None:
            raise FPLConfigError("execution='deepspeed' needs the Accelerator of `accelerate launch --use_deepspeed`.")
        if self.config.vptpr:
            raise FPLConfigError("vptpr is not available with execution='deepspeed'; use 'clients_per_rank'.")
        return DeepSpeedClientTrainer(
            self.model, accelerator, lr=self.config.lr, batch_size=self.config.batch_size, input_column="pixel_values"
        )

    # ------------------------------------------------------------------ running
    def fit(self, partitions: Partitions, resume_from: Optional[str] = None) -> list[dict[str, Any]]:
        """Run the rounds; saves history, partition report, diagnostics and plots to ``output_dir``."""
        if partitions.dataset is None:
            raise FPLConfigError(
                "the partitions hold no dataset; call partitioner.split(dataset, ...) with the "
                "preprocessed dataset (pixel_values, label)."
            )
        history = self.federation.fit(partitions, resume_from=resume_from)
        out = self.config.output_dir
        if out and self.federation.accelerator.is_main_process and self.federation.diagnostics:
            save_diagnostics(self.federation.diagnostics, out)
        return history

    def evaluate(self, dataset: Any) -> dict[str, float]:
        """Accuracy/loss of the current global prompts on ``dataset``."""
        return self.client_trainer.evaluate(dataset)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.federation.history

    @property
    def diagnostics(self) -> list[dict]:
        return self.federation.diagnostics

    @property
    def global_params(self) -> dict[str, torch.Tensor]:
        return self.federation.global_params

    def summary(self, metric_key: str, last: int = 5) -> dict[str, Optional[float]]:
        """Best round and last-``last``-round mean/std of a history column (e.g. ``eval_test_accuracy``)."""
        return summarize(self.history, metric_key, last)

    def save_prompts(self, path: str | Path) -> Path:
        from .io import save_prompts

        return save_prompts(self.model, path)
