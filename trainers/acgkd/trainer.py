"""``ACGKDTrainer``: ``transformers.Trainer`` whose training data is the pseudo-graph bank.

It adds one thing to the Trainer: each step first refines the bank (generator step), then the Trainer's
own step fits the student to the teacher on pseudo-graphs. Real graphs appear only in ``evaluate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import Trainer

from hf_trust.errors import HFTrustConfigError, HFTrustTypeError

from .config import ACGKDConfig
from .distiller import ACGKDCore


class StepDataset(Dataset):
    """``{"step": i}`` rows: the Trainer's loop needs a dataset, ACGKD's data is the bank."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"step": i}


def graph_collator(rows: list) -> dict:
    """Steps → a dummy tensor; PyG ``Data`` → ``{"batch": Batch, "labels": y}`` (default_collate breaks on Data)."""
    from torch_geometric.data import Batch, Data

    if rows and isinstance(rows[0], Data):
        b = Batch.from_data_list(rows)
        return {"batch": b, "labels": b.y.view(-1)}
    return {"step": torch.tensor([r["step"] for r in rows])}


def accuracy_metrics(pred) -> dict:
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(pred.label_ids)).mean())}


class ACGKDTrainer(Trainer):
    """Data-free KD of a PyG teacher into a student.

    Args:
        teacher: a trained weighted-edge teacher (e.g. :class:`GNNClassifier`).
        student: the student encoder (lifted to the teacher's width by a GAT projection and classified by the
            teacher's frozen head when ``args.reuse_teacher_head``) or a full classifier otherwise.
        args: :class:`ACGKDConfig`.
        eval_dataset: real PyG graphs for ``evaluate()`` (accuracy); never used for training.
        train_dataset: must stay ``None``: the distillation path does not take real data.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        args: ACGKDConfig,
        eval_dataset: Any = None,
        train_dataset: Any = None,
        compute_metrics=None,
        **kwargs,
    ):
        if not isinstance(args, ACGKDConfig):
            raise HFTrustTypeError(
                f"ACGKDTrainer needs args=ACGKDConfig(...), got {type(args).__name__}"
                " (ACGKDConfig carries the bank and loss settings)."
            )
        if train_dataset is not None:
            raise HFTrustConfigError(
                "ACGKD is data-free: pass real graphs as eval_dataset only; train_dataset must be None."
            )
        rank = args.process_index
        self.core = ACGKDCore(teacher, student, args, rank=rank)
        super().__init__(
            model=self.core.model,
            args=args,
            train_dataset=StepDataset(args.max_steps),
            eval_dataset=eval_dataset,
            data_collator=graph_collator,
            compute_metrics=compute_metrics or accuracy_metrics,
            **kwargs,
        )

    def _prepare_input(self, data):
        # PyG Batch is neither a tensor nor a Mapping, so the Trainer would leave it on the CPU.
        if hasattr(data, "to") and not isinstance(data, torch.Tensor) and hasattr(data, "num_graphs"):
            return data.to(self.args.device)
        return super()._prepare_input(data)

    def train(self, *args, gen_warmup: bool = True, **kwargs):
        """Phase 1 (generator warm-up, once), then the Trainer's loop for phase 2."""
        if gen_warmup and not self.core.warmed_up:
            self.core.warmup(progress=not self.args.disable_tqdm and self.args.process_index == 0)
            if self.core.history["warmup_ce"]:
                self.log(
                    {
                        "warmup_ce_first": self.core.history["warmup_ce"][0],
                        "warmup_ce_last": self.core.history["warmup_ce"][-1],
                        "warmup_bn_first": self.core.history["warmup_bn"][0],
                        "warmup_bn_last": self.core.history["warmup_bn"][-1],
                    }
                )
        return super().train(*args, **kwargs)

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        self.core.phase2_generator(self.state.global_step)
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model: nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        if "batch" in inputs:  # evaluation on real graphs
            b = inputs["batch"]
            logits = model(b.x, b.edge_index, None, b.batch)
            loss = F.cross_entropy(logits, inputs["labels"])
            return (loss, {"logits": logits}) if return_outputs else loss
        loss = self.core.student_loss(model, self.state.global_step, device=self.args.device)
        return (loss, {}) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self.core.history["tau"]:
            logs.setdefault("tau", self.core.history["tau"][-1])
        if self.core.history["gen_loss"]:
            logs.setdefault("gen_loss", self.core.history["gen_loss"][-1])
        super().log(logs, *args, **kwargs)
