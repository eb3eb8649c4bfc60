"""Under ``accelerate launch``: GGEUR's statistics round; rank 0 saves the pooled covariances and shapes."""

import sys

import torch

torch.set_num_threads(1)

from hf_trust.trainers.federated import DirichletLabelPartitioner, FedAvg, FederatedConfig  # noqa: E402
from hf_trust.trainers.ggeur import GGEURConfig, GGEURTrainer  # noqa: E402
from tests.ggeur.ggeur_fixtures import digit_embeddings  # noqa: E402

train, test = digit_embeddings(n_train=600)
parts = DirichletLabelPartitioner(num_clients=5, alpha=0.3, min_size=1, min_per_class=1, seed=0).split(train)
trainer = GGEURTrainer(
    GGEURConfig(guide_threshold=None, per_sample=20, lr=1e-2, batch_size=128),
    FedAvg(),
    FederatedConfig(rounds=2, seed=0),
    eval_datasets={"test": test},
)
trainer.fit(parts)
fed = trainer.federation
if fed.accelerator.is_main_process:
    torch.save(
        {
            "cov": trainer.pooled_cov,
            "eig": {c: s.eigenvalues for c, s in trainer.shapes.items()},
            "head": fed.global_params,
            "world": fed.world,
        },
        sys.argv[1],
    )
