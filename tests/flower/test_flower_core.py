"""FlowerFederation on the Simulation Engine agrees with the in-process engine (same model, partition and seed)."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from hf_trust.trainers.federated import FedAdam as CoreFedAdam  # noqa: E402
from hf_trust.trainers.federated import FedAvg as CoreFedAvg  # noqa: E402
from hf_trust.trainers.federated import FederatedConfig  # noqa: E402
from hf_trust.trainers.federated import FedProx as CoreFedProx  # noqa: E402
from hf_trust.trainers.federated.flower import FlowerFederation, HFTrustStrategy  # noqa: E402
from tests.federated.fed_fixtures import make_client_trainer  # noqa: E402
from tests.flower.flower_fixtures import MU, ROUNDS, max_abs_diff, reference  # noqa: E402

CFG = FederatedConfig(rounds=ROUNDS, seed=0)


def _close(fed, ref, tol=1e-5):
    diff = max_abs_diff(fed.global_params, ref.global_params)
    assert diff <= tol, f"Flower and in-process global parameters differ by {diff:.3g} after {ROUNDS} rounds"
    # and they moved: equality of two untrained models would prove nothing
    assert max_abs_diff(fed.global_params, fed.initial_params) > 1e-2
    return diff


def test_flower_fedavg_weighted_equals_the_in_process_engine(simulated):
    fed = simulated["fedavg"]
    assert fed.error is None
    assert len(fed.history) == ROUNDS
    _close(fed, reference(CoreFedAvg(), CFG))
    # the history has the core engine's columns
    ref = reference(CoreFedAvg(), CFG)
    for row, ref_row in zip(fed.history, ref.history):
        assert row["clients"] == ref_row["clients"]
        assert row["payload_bytes_up"] == ref_row["payload_bytes_up"]
        assert row["train_loss"] == pytest.approx(ref_row["train_loss"], abs=1e-5)


def test_flower_fedavg_unweighted_equals_the_in_process_engine(simulated):
    fed = simulated["fedavg_unweighted"]
    assert fed.error is None
    _close(fed, reference(CoreFedAvg(weighted=False), CFG))
    # weighted and unweighted really differ on this skewed partition
    assert max_abs_diff(fed.global_params, simulated["fedavg"].global_params) > 1e-4


def test_flower_fedprox_equals_the_in_process_fedprox(simulated):
    fed = simulated["fedprox"]
    assert fed.error is None
    _close(fed, reference(CoreFedProx(mu=MU), CFG))
    # the proximal term is applied: FedProx differs from FedAvg
    assert max_abs_diff(fed.global_params, simulated["fedavg"].global_params) > 1e-4


def test_our_strategies_on_flower_aggregate_exactly_as_in_process(simulated):
    # seeded client sampling (client_fraction=0.5) follows FederatedConfig
    fed = simulated["core_fedavg_sampled"]
    ref = reference(CoreFedAvg(), FederatedConfig(rounds=ROUNDS, seed=0, client_fraction=0.5))
    assert [r["clients"] for r in fed.history] == [r["clients"] for r in ref.history]
    assert max_abs_diff(fed.global_params, ref.global_params) <= 1e-6
    # FedProx unweighted and FedAdam's server optimiser through HFTrustStrategy
    assert isinstance(simulated["core_fedadam"].strategy, HFTrustStrategy)
    assert (
        max_abs_diff(simulated["core_fedadam"].global_params, reference(CoreFedAdam(server_lr=0.05), CFG).global_params)
        <= 1e-6
    )
    prox = reference(CoreFedProx(mu=MU, weighted=False), CFG)
    assert max_abs_diff(simulated["core_fedprox_unweighted"].global_params, prox.global_params) <= 1e-6


def test_server_side_and_client_side_evaluation(simulated):
    fed = simulated["client_eval"]
    assert fed.error is None
    for row in fed.history:
        # the strategy's federated evaluation on the clients' local data, aggregated by Flower
        assert 0 <= row["evaluate_metrics"]["accuracy"] <= 1
        assert row["evaluate_failed_clients"] == []
        # and the server-side evaluation of eval_datasets, as in FederatedTrainer
        assert 0 <= row["eval_global_accuracy"] <= 1
    # here the clients' local data is the whole eval set split up: the weighted mean equals the global figure
    last = fed.history[-1]
    assert last["evaluate_metrics"]["accuracy"] == pytest.approx(last["eval_global_accuracy"], abs=1e-9)


def test_bad_arguments_fail_before_the_engine_starts():
    from flwr.serverapp.strategy import FedAvg

    from hf_trust.trainers.federated.flower import run_simulations
    from tests.flower.flower_fixtures import core_data

    _, parts = core_data()
    with pytest.raises(TypeError, match="Flower strategy"):
        FlowerFederation(make_client_trainer(), strategy="fedavg")
    # Flower's FedAvg waits for min_available_nodes; more than the partition's clients would hang forever
    fed = FlowerFederation(make_client_trainer(), FedAvg(min_available_nodes=10), CFG)
    with pytest.raises(ValueError, match="wait forever"):
        run_simulations([(fed, parts)])


def test_apps_are_a_real_flower_client_app_and_server_app():
    """``fed.apps(parts)`` are Flower's own app objects; the ClientApp answers a train message in-process."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.supercore.task_identity import TaskIdentity

    from hf_trust.errors import HFTrustConfigError
    from hf_trust.trainers.federated.client import trainable_params
    from hf_trust.trainers.federated.flower import UNIT_WEIGHT_KEY, params_to_arrays
    from tests.flower.flower_fixtures import core_data

    _, parts = core_data()
    trainer = make_client_trainer()
    fed = FlowerFederation(trainer, CoreFedAvg(), CFG)
    client_app, server_app = fed.apps(parts)
    assert isinstance(client_app, ClientApp) and isinstance(server_app, ServerApp)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # what a ServerApp process has
    start = trainable_params(trainer.model)
    msg = Message(
        RecordDict({"arrays": params_to_arrays(start), "config": ConfigRecord({"server-round": 1})}),
        dst_node_id=7,
        message_type="train",
    )
    msg.metadata.__dict__["_message_id"] = "m1"
    ctx = Context(
        run_id=1, node_id=7, node_config={"partition-id": 2, "num-partitions": 4}, state=RecordDict(), run_config={}
    )
    reply = client_app(msg, ctx)
    arrays = reply.content["arrays"]
    metrics = reply.content["metrics"]
    assert list(arrays.keys()) == list(start)  # only the trainable parameters travel, in the model's order
    assert metrics["num-examples"] == len(parts.indices[2]) and metrics[UNIT_WEIGHT_KEY] == 1
    assert reply.content["hf-trust-client"]["partition-id"] == 2
    assert any(float(abs(arrays[k].numpy() - start[k].numpy()).max()) > 0 for k in start)  # it trained
    # a SuperNode started without --node-config partition-id gets an error that names the fix
    ctx.node_config = {}
    with pytest.raises(HFTrustConfigError, match="--node-config"):
        client_app(msg, ctx)


def test_simulation_leaves_the_callers_pythonpath_alone(simulated, request):
    # Flower's Ray backend rewrites os.environ["PYTHONPATH"]; later subprocesses of the caller must not inherit it.
    before, after = request.config.hf_trust_pythonpath_around_simulation
    assert after == before
