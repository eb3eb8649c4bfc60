"""Under ``accelerate launch --use_deepspeed --zero_stage S --num_processes 1``: a federation whose clients
train as DeepSpeed jobs; compared by the test with the plain simulation (SGD, same seeds)."""

import sys

import torch

torch.set_num_threads(1)

from accelerate import Accelerator  # noqa: E402

from hf_trust.trainers.federated import (  # noqa: E402
    DeepSpeedClientTrainer,
    DirichletLabelPartitioner,
    FedAvg,
    FederatedConfig,
    FederatedTrainer,
)
from tests.federated.fed_fixtures import make_client_trainer, make_dataset  # noqa: E402


class WithScale(torch.nn.Module):
    """The tiny classifier plus a frozen 0-dim parameter, like CLIP's logit_scale."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.scale = torch.nn.Parameter(torch.tensor(1.0), requires_grad=False)

    def forward(self, x):
        return self.inner(x) * self.scale


ds = make_dataset()
parts = DirichletLabelPartitioner(num_clients=3, alpha=0.5, min_size=5, seed=1).split(ds)
cfg = dict(rounds=2, local_epochs=1, seed=0)
acc = Accelerator()
model = WithScale(make_client_trainer().model)
client = DeepSpeedClientTrainer(model, acc, lr=0.05, batch_size=16)
trainer = FederatedTrainer(client, FedAvg(), FederatedConfig(execution="deepspeed", **cfg), accelerator=acc)
trainer.fit(parts)
torch.save(
    {
        "params": {k.replace("inner.", ""): v for k, v in trainer.global_params.items()},
        "type": str(acc.distributed_type),
    },
    sys.argv[1],
)
