"""``acgkd_distill``: the plain-loop form of ACGKD (no Trainer); same updates as :class:`ACGKDTrainer`."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .distiller import ACGKDCore, DistillModel


def build_student_optimizer(model: nn.Module, args) -> tuple:
    """The optimizer and scheduler ``Trainer`` would build for ``args`` (same class, kwargs and decay groups).

    Mirroring the grouping matters beyond weight decay: biases in front of a BatchNorm have an exact gradient
    of zero, so Adam turns any rounding difference in them into a full ±lr step; a differently grouped
    (fused) update made the plain loop drift from the Trainer after the first step.
    """
    from transformers import Trainer, get_scheduler

    # The Trainer's own rule (it does not read ``self``), so the two paths cannot drift apart.
    decay = set(Trainer.get_decay_parameter_names(None, model))
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if n in decay and p.requires_grad],
            "weight_decay": args.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if n not in decay and p.requires_grad], "weight_decay": 0.0},
    ]
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    opt = cls(groups, **kwargs)
    sched = get_scheduler(
        args.lr_scheduler_type,
        opt,
        num_warmup_steps=args.get_warmup_steps(args.max_steps),
        num_training_steps=args.max_steps,
    )
    return opt, sched


def acgkd_distill(
    teacher: nn.Module,
    student: nn.Module,
    args,
    eval_graphs: Optional[list] = None,
    progress: bool = True,
    return_core: bool = False,
    bank=None,
    eval_every: int = 0,
):
    """Distil ``teacher`` into ``student`` without data; returns the trained :class:`DistillModel`.

    ``args`` is an :class:`ACGKDConfig`. ``eval_graphs`` is only used to log accuracy at the end, never for
    training. With ``return_core=True`` also returns the :class:`ACGKDCore` (bank, history).
    ``bank`` starts from an existing :class:`PseudoGraphBank`; with ``gen_warmup_steps=0`` and
    ``gen_steps_per_student_step=0`` it stays frozen.
    ``eval_every`` > 0 (with ``eval_graphs``) also records, every that many student steps and at the end,
    ``core.history["eval_curve"]``: rows of step, curriculum pool share r(t) and accuracy on ``eval_graphs``
    (a read-only pass in eval mode: it changes neither the weights nor any random draw of training).
    """
    from tqdm.auto import tqdm

    from .distiller import graph_accuracy

    core = ACGKDCore(teacher, student, args, bank=bank)
    model: DistillModel = core.model.train()
    core.warmup(progress=progress)
    opt, sched = build_student_optimizer(model, args)
    curve = core.history.setdefault("eval_curve", []) if eval_every and eval_graphs is not None else None

    def record(step: int) -> None:
        share = core.sampler.ratio(step)
        curve.append({"step": step, "pool_share": float(share), "accuracy": graph_accuracy(model, eval_graphs)})

    for step in tqdm(range(args.max_steps), desc="ACGKD distillation", disable=not progress):
        if curve is not None and step % eval_every == 0:
            record(step)
        core.phase2_generator(step)
        loss = core.student_loss(model, step)
        loss.backward()
        if args.max_grad_norm and args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    if curve is not None:
        record(args.max_steps)
    if eval_graphs is not None:
        core.history["eval_accuracy"] = [graph_accuracy(model, eval_graphs)]
    core.close()
    return (model, core) if return_core else model
