"""The federated-learning core of hf-trust, on Accelerate.

Partitioners split a labelled dataset into clients; a :class:`ClientTrainer` trains the trainable
parameters of one model on one client's data; a :class:`Strategy` turns client updates into the next
global parameters; :class:`FederatedTrainer` runs the rounds, in one process or spread over the
processes of ``accelerate launch``.  ``rounds`` holds the steps of one round (sampling, seeding, the
non-finite check, the weighted mean, the server step, the history row) and ``checkpoint`` the checkpoint
format with its retention; the Flower engine (``flower/``) drives the same steps.
"""

from .checkpoint import latest_checkpoint, prune_checkpoints, verify_checkpoint
from .client import (
    ClientContext,
    ClientResult,
    ClientTimeout,
    ClientTrainer,
    SupervisedClientTrainer,
    load_params,
    trainable_params,
)
from .deepspeed_utils import DeepSpeedClientTrainer, gathered, zero_dim_params_to_buffers
from .partition import (
    DirichletLabelPartitioner,
    DomainPartitioner,
    FixedClassesPartitioner,
    IIDPartitioner,
    PartitionError,
    Partitions,
)
from .rounds import derived_seed, sample_clients
from .stats import ClassMoments, reduce_moments
from .strategy import FedAdam, FedAvg, FedOpt, FedProx, Strategy, get_strategy
from .trainer import FederatedConfig, FederatedTrainer, load_history, plot_history

__all__ = [
    "ClassMoments",
    "ClientContext",
    "ClientResult",
    "ClientTimeout",
    "ClientTrainer",
    "DeepSpeedClientTrainer",
    "DirichletLabelPartitioner",
    "DomainPartitioner",
    "FedAdam",
    "FedAvg",
    "FedOpt",
    "FedProx",
    "FederatedConfig",
    "FederatedTrainer",
    "FixedClassesPartitioner",
    "IIDPartitioner",
    "PartitionError",
    "Partitions",
    "Strategy",
    "SupervisedClientTrainer",
    "derived_seed",
    "gathered",
    "get_strategy",
    "latest_checkpoint",
    "load_history",
    "load_params",
    "plot_history",
    "prune_checkpoints",
    "reduce_moments",
    "sample_clients",
    "trainable_params",
    "verify_checkpoint",
    "zero_dim_params_to_buffers",
]
