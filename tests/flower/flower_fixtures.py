"""The federations the Flower tests simulate (all with 4 clients, so that one Simulation Engine start serves them)
and the in-process references they are compared with."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hf_trust.trainers.federated import (
    ClientContext,
    DirichletLabelPartitioner,
    FederatedConfig,
    FederatedTrainer,
    SupervisedClientTrainer,
)
from hf_trust.trainers.federated import FedAdam as CoreFedAdam
from hf_trust.trainers.federated import FedAvg as CoreFedAvg
from hf_trust.trainers.federated import FedProx as CoreFedProx
from tests.federated.fed_fixtures import make_client_trainer, make_dataset

NUM_CLIENTS = 4
ROUNDS = 3
MU = 0.5
# Flower's strategies default to at least 2 sampled / available nodes and client-side evaluation of every node;
# the tests evaluate on the server, as the in-process engine does.
NO_CLIENT_EVAL = dict(fraction_evaluate=0.0, min_train_nodes=1, min_evaluate_nodes=0, min_available_nodes=1)


def core_data():
    ds = make_dataset(n=240)
    return ds, DirichletLabelPartitioner(num_clients=NUM_CLIENTS, alpha=0.5, min_size=10, seed=0).split(ds)


def reference(strategy, config: FederatedConfig, trainer=None) -> FederatedTrainer:
    """The in-process engine on the same model, partition and seed."""
    _, parts = core_data()
    ref = FederatedTrainer(trainer or make_client_trainer(), strategy, config)
    ref.fit(parts)
    return ref


#: The ServerApp's round timeout of the "failures" federation.  Wide enough that on a loaded 2-core machine every
#: client that should answer does (client 3's ClientTimeout error reply of round 2 arrived after a 3 s bound once
#: under a load average of ~6), while client 2's round-0 sleep still outlives it by a clear margin.
FAILURES_ROUND_TIMEOUT = 15.0


class MisbehavingTrainer(SupervisedClientTrainer):
    """Round 0: client 2 outlives the server's round timeout.  Round 1: client 1 raises.  Round 2: client 3 runs
    past ``FederatedConfig.client_timeout`` (a ClientTimeout inside its training)."""

    def fit(self, ctx: ClientContext):
        if ctx.round == 0 and ctx.client_id == 2:
            time.sleep(FAILURES_ROUND_TIMEOUT + 5.0)
        if ctx.round == 1 and ctx.client_id == 1:
            raise RuntimeError("boom: client 1 lost its data")
        if ctx.round == 2 and ctx.client_id == 3:
            time.sleep(2.5)
            ctx.check_deadline()
            raise AssertionError("check_deadline should have raised")  # pragma: no cover
        return super().fit(ctx)


class NaNTrainer(SupervisedClientTrainer):
    """Client 2 returns a NaN weight in round 0."""

    def fit(self, ctx: ClientContext):
        result = super().fit(ctx)
        if ctx.round == 0 and ctx.client_id == 2:
            import torch

            with torch.no_grad():
                next(self.model.parameters())[0, 0] = float("nan")
        return result


def nan_trainer() -> NaNTrainer:
    base = make_client_trainer()
    return NaNTrainer(base.model, lr=0.05, batch_size=16)


def misbehaving_trainer() -> MisbehavingTrainer:
    base = make_client_trainer()
    return MisbehavingTrainer(base.model, lr=0.05, batch_size=16)


def flower_jobs() -> dict:
    """name → (FlowerFederation, partitions)."""
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
        FedAdam,
        FedAvg,
        FedMedian,
        FedProx,
        FedTrimmedAvg,
        Krum,
    )

    from hf_trust.trainers.federated.flower import UNIT_WEIGHT_KEY, FlowerFederation

    _, parts = core_data()
    cfg = FederatedConfig(rounds=ROUNDS, seed=0)
    rec = dict(record_client_params=True)
    jobs = {
        "fedavg": FlowerFederation(make_client_trainer(), FedAvg(**NO_CLIENT_EVAL), cfg),
        "fedavg_unweighted": FlowerFederation(
            make_client_trainer(), FedAvg(weighted_by_key=UNIT_WEIGHT_KEY, **NO_CLIENT_EVAL), cfg
        ),
        "fedprox": FlowerFederation(make_client_trainer(), FedProx(proximal_mu=MU, **NO_CLIENT_EVAL), cfg),
        "core_fedavg_sampled": FlowerFederation(
            make_client_trainer(), CoreFedAvg(), FederatedConfig(rounds=ROUNDS, seed=0, client_fraction=0.5)
        ),
        "core_fedprox_unweighted": FlowerFederation(make_client_trainer(), CoreFedProx(mu=MU, weighted=False), cfg),
        "core_fedadam": FlowerFederation(make_client_trainer(), CoreFedAdam(server_lr=0.05), cfg),
        "fedmedian": FlowerFederation(make_client_trainer(), FedMedian(**NO_CLIENT_EVAL), cfg, **rec),
        "krum": FlowerFederation(make_client_trainer(), Krum(num_malicious_nodes=1, **NO_CLIENT_EVAL), cfg, **rec),
        "trimmed": FlowerFederation(make_client_trainer(), FedTrimmedAvg(beta=0.25, **NO_CLIENT_EVAL), cfg, **rec),
        "fedadam": FlowerFederation(make_client_trainer(), FedAdam(eta=0.05, **NO_CLIENT_EVAL), cfg, **rec),
        "dp_clip": FlowerFederation(
            make_client_trainer(),
            DifferentialPrivacyServerSideFixedClipping(FedAvg(**NO_CLIENT_EVAL), 0.0, 0.05, NUM_CLIENTS),
            cfg,
            **rec,
        ),
        "dp_noise": FlowerFederation(
            make_client_trainer(),
            DifferentialPrivacyServerSideFixedClipping(FedAvg(**NO_CLIENT_EVAL), 1.0, 0.05, NUM_CLIENTS),
            cfg,
            **rec,
        ),
        "dp_client": FlowerFederation(
            make_client_trainer(),
            DifferentialPrivacyClientSideFixedClipping(FedAvg(**NO_CLIENT_EVAL), 0.0, 0.05, NUM_CLIENTS),
            cfg,
            client_mods=[fixedclipping_mod],
            **rec,
        ),
        "client_eval": FlowerFederation(
            make_client_trainer(),
            FedAvg(fraction_evaluate=1.0, min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1),
            FederatedConfig(rounds=2, seed=0),
            eval_datasets={"global": make_dataset(n=240)},
        ),
        "failures": FlowerFederation(
            misbehaving_trainer(),
            FedAvg(**NO_CLIENT_EVAL),
            FederatedConfig(rounds=3, seed=0, client_timeout=2.0),
            round_timeout=FAILURES_ROUND_TIMEOUT,
            **rec,
        ),
        "nonfinite": FlowerFederation(
            nan_trainer(), FedAvg(**NO_CLIENT_EVAL), FederatedConfig(rounds=2, seed=0), **rec
        ),
    }
    jobs.update(resume_jobs(parts))
    out = {name: (fed, parts) for name, fed in jobs.items()}
    out["ggeur"] = ggeur_job()
    out["fpl"] = fpl_job()
    out["example_app"] = example_app_job()  # 2 clients: uses SuperNodes 0 and 1 of the same engine
    return out


# ---------------------------------------------------------------------- resume (strategy state included)
RESUME_DIR = Path(tempfile.mkdtemp(prefix="hf_trust_flower_resume_"))


def resume_jobs(parts) -> dict:
    """For our FedAdam and Flower's: an uninterrupted run that checkpoints every round (keeping 2), then one that
    resumes from the first run's checkpoint-(ROUNDS-1) (the jobs run in this order on one engine start)."""
    from flwr.serverapp.strategy import FedAdam

    from hf_trust.trainers.federated.flower import FlowerFederation

    jobs = {}
    for name, make in (
        ("core_fedadam", lambda: CoreFedAdam(server_lr=0.05)),
        ("flwr_fedadam", lambda: FedAdam(eta=0.05, **NO_CLIENT_EVAL)),
    ):
        full = FederatedConfig(rounds=ROUNDS, seed=0, output_dir=str(RESUME_DIR / f"{name}_full"), save_total_limit=2)
        jobs[f"{name}_full"] = FlowerFederation(make_client_trainer(), make(), full)
        resumed = FederatedConfig(rounds=ROUNDS, seed=0, output_dir=str(RESUME_DIR / f"{name}_resumed"))
        fed = FlowerFederation(make_client_trainer(seed=99), make(), resumed)  # other initial weights
        fed.resume_from = str(RESUME_DIR / f"{name}_full" / f"checkpoint-{ROUNDS - 1}")  # kept by the limit
        jobs[f"{name}_resumed"] = fed
    return jobs


# ---------------------------------------------------------------------- examples/flower_app in simulation
EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "flower_app"


def example_app_module():
    """examples/flower_app's task module (the app's package is not installed; its folder goes on sys.path, which
    the Simulation Engine's workers inherit)."""
    if str(EXAMPLE_APP) not in sys.path:
        sys.path.insert(0, str(EXAMPLE_APP))
    import hf_trust_flower_app.task as task

    return task


def example_app_job():
    task = example_app_module()
    fed, parts = task.make_federation(rounds=2)
    fed.record_client_params = True
    return fed, parts


# ---------------------------------------------------------------------- GGEUR and FPL (also 4 clients)
def ggeur_setup():
    from hf_trust.trainers.ggeur import GGEURConfig
    from tests.ggeur.ggeur_fixtures import digit_embeddings

    train, test = digit_embeddings(n_train=600)
    parts = DirichletLabelPartitioner(num_clients=NUM_CLIENTS, alpha=0.3, min_size=10, seed=0).split(train)
    config = GGEURConfig(guide_threshold=0.8, per_sample=10, target_per_class=60, lr=1e-2, batch_size=64)
    return train, test, parts, config


def ggeur_job():
    from hf_trust.trainers.federated.flower.ggeur import FlowerGGEUR

    _, test, parts, config = ggeur_setup()
    fed = FlowerGGEUR.from_partitions(
        parts, config, CoreFedAvg(), FederatedConfig(rounds=2, seed=0), {"test": test}, record_client_params=True
    )
    return fed, parts


def fpl_setup():
    from hf_trust.trainers.fpl import FederatedPromptTrainer, FPLConfig, PromptConfig
    from tests.fpl.fpl_fixtures import CLASS_NAMES, WordTokenizer, make_image_dataset, make_tiny_clip

    clip = make_tiny_clip()
    prompt = PromptConfig(kind="both", n_ctx_text=3, n_ctx_vision=2, depth_text=2, depth_vision=2)
    ds = make_image_dataset()
    cfg = FPLConfig(rounds=2, batch_size=8, lr=0.05, seed=0, vptpr=True)
    tr = FederatedPromptTrainer(clip, CLASS_NAMES, prompt=prompt, config=cfg, tokenizer=WordTokenizer())
    parts = DirichletLabelPartitioner(num_clients=NUM_CLIENTS, alpha=0.5, min_size=4, seed=0).split(ds)
    return tr, parts, clip


def fpl_job():
    from hf_trust.trainers.federated.flower.fpl import FlowerPromptFederation

    tr, parts, _ = fpl_setup()
    return FlowerPromptFederation(tr, record_client_params=True), parts


def max_abs_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(np.asarray(a[k], dtype=np.float64) - np.asarray(b[k], dtype=np.float64)).max()) for k in a)
