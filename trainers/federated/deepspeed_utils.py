"""DeepSpeed helpers for federations whose clients train a large backbone (ZeRO-2/3).

Path: each client's local training is one DeepSpeed job over all ranks (clients run one after another);
the server step is local to that job.  Two known pitfalls are handled here:

* DeepSpeed 0.19 broadcasts parameters with ``view(torch.uint8)``, which fails on 0-dim parameters such as
  CLIP's ``logit_scale``; :func:`zero_dim_params_to_buffers` turns frozen 0-dim parameters into buffers.
* Under ZeRO-3 each rank holds a shard of every parameter; reading or overwriting the trainable tensors
  for aggregation must happen inside :func:`gathered`, which wraps ``deepspeed.zero.GatheredParameters``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn


def zero_dim_params_to_buffers(model: nn.Module) -> list[str]:
    """Replace frozen 0-dim parameters by buffers of the same value; returns their names."""
    moved = []
    for module_name, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 0 and not param.requires_grad:
                del module._parameters[name]
                module.register_buffer(name, param.detach().clone())
                moved.append(f"{module_name}.{name}" if module_name else name)
    return moved


def is_zero3_partitioned(params: Iterable[torch.Tensor]) -> bool:
    return any(hasattr(p, "ds_id") for p in params)


@contextlib.contextmanager
def gathered(params: Iterable[torch.Tensor], modifier_rank: int | None = 0):
    """Full parameters inside the block under ZeRO-3 (writes by ``modifier_rank`` are re-partitioned);
    a no-op when the parameters are not partitioned or DeepSpeed is not installed."""
    params = list(params)
    if not is_zero3_partitioned(params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield


class DeepSpeedClientTrainer:
    """Client training as one DeepSpeed job over all ranks (``FederatedConfig(execution="deepspeed")``).

    The model and optimiser are prepared once by ``accelerator.prepare``; each client then starts from the
    global trainable parameters (written under :func:`gathered` for ZeRO-3) with a fresh optimiser state,
    trains on its data with every rank taking a shard of each batch, and its result is read back under
    :func:`gathered`.  Clients run one after another; the server step is local to the job.

    Args:
        model: the module (frozen 0-dim parameters are turned into buffers first).
        accelerator: an ``Accelerator`` created with a DeepSpeed plugin (``accelerate launch --use_deepspeed``).
        lr, batch_size: SGD learning rate and per-rank batch size.
        input_column, label_column: columns of the client datasets.
    """

    def __init__(
        self,
        model: nn.Module,
        accelerator,
        lr: float = 0.01,
        batch_size: int = 8,
        input_column: str = "x",
        label_column: str = "label",
    ):
        zero_dim_params_to_buffers(model)
        self.accelerator = accelerator
        self.lr, self.batch_size = lr, batch_size
        self.input_column, self.label_column = input_column, label_column
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        if plugin is not None and plugin.deepspeed_config.get("train_micro_batch_size_per_gpu") in (None, "auto"):
            # Client data arrive as plain batches, not a prepared DataLoader, so DeepSpeed is told the size.
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size
        if plugin is not None and plugin.deepspeed_config.get("gradient_clipping") == "auto":
            # accelerate would fill in 1.0; the plain client trainer does not clip, and both must agree.
            plugin.deepspeed_config["gradient_clipping"] = 0.0
        self.engine, self.optimizer = accelerator.prepare(model, optimizer)
        self.model = _UnwrappedView(self)

    def _trainable(self) -> dict:
        return {n: p for n, p in self.engine.module.named_parameters() if p.requires_grad}

    def load_global(self, params: dict) -> None:
        """Write the global state into the engine.  ZeRO keeps an fp32 master copy inside the optimiser
        that overwrites the module's parameters at the next step, so the master copy is set too."""
        from deepspeed.utils import safe_set_full_fp32_param

        trainable = self._trainable()
        with gathered(trainable.values(), modifier_rank=0), torch.no_grad():
            for n, p in trainable.items():
                p.copy_(params[n].to(p.device, p.dtype))
        for n, p in trainable.items():
            safe_set_full_fp32_param(p, params[n].to(self.accelerator.device, torch.float32))

    def read_params(self) -> dict:
        """The trainable parameters in full fp32 (gathered under ZeRO-3, from the master copy)."""
        from deepspeed.utils import safe_get_full_fp32_param

        out = {}
        for n, p in self._trainable().items():
            full = safe_get_full_fp32_param(p)
            if full is None:  # before the first optimiser step there is no master copy yet
                with gathered([p], modifier_rank=None):
                    full = p.detach()
            out[n] = full.detach().float().cpu().clone()
        return out

    def _reset_optimizer(self) -> None:
        # A fresh local optimiser per client (SGD keeps no state; momentum buffers would be cleared here).
        for state in getattr(self.optimizer, "state", {}).values():
            state.clear()

    def fit(self, ctx):
        from .client import ClientResult, num_rows

        self.load_global(ctx.global_params)
        self._reset_optimizer()
        data = ctx.dataset
        n = num_rows(data)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        total, seen = 0.0, 0
        self.engine.train()
        for _ in range(ctx.local_epochs):
            order = torch.randperm(n, generator=ctx.generator)
            for start in range(0, n, self.batch_size * world):
                rows = order[start : start + self.batch_size * world][rank::world].tolist()
                if not rows:
                    continue
                batch = data[rows] if not isinstance(data, dict) else {k: v[rows] for k, v in data.items()}
                x = torch.as_tensor(batch[self.input_column], dtype=torch.float32).to(self.accelerator.device)
                y = torch.as_tensor(batch[self.label_column], dtype=torch.long).to(self.accelerator.device)
                loss = nn.functional.cross_entropy(self.engine(x), y)
                extra = ctx.extra_loss(self.engine.module)
                if extra is not None:
                    loss = loss + extra
                self.accelerator.backward(loss)
                self.optimizer.step()
                self.optimizer.zero_grad()
                total += loss.item() * len(rows)
                seen += len(rows)
        return ClientResult(n, {"train_loss": total / max(seen, 1)})

    @torch.no_grad()
    def evaluate(self, dataset) -> dict:
        x = torch.as_tensor(dataset[self.input_column], dtype=torch.float32).to(self.accelerator.device)
        y = torch.as_tensor(dataset[self.label_column], dtype=torch.long).to(self.accelerator.device)
        self.engine.eval()
        return {"accuracy": float((self.engine(x).argmax(-1) == y).float().mean())}


class _UnwrappedView:
    """What :class:`FederatedTrainer` sees as ``client_trainer.model``: reads and writes go through the
    gathered parameters of the DeepSpeed engine."""

    def __init__(self, owner: DeepSpeedClientTrainer):
        self._owner = owner

    def named_parameters(self):
        return self._owner.read_params().items()

    def parameters(self):
        return self._owner.read_params().values()
