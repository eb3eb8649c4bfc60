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
from typing import Iterable

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
def gathered(params: Iterable[torch.Tensor], modifier_rank: "int | None" = 0):
    """Full parameters inside the block under ZeRO-3 (writes by ``modifier_rank`` are re-partitioned);
    a no-op when the parameters are not partitioned or DeepSpeed is not installed."""
    params = list(params)
    if not is_zero3_partitioned(params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield
