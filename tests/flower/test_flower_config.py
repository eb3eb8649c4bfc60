"""Loud deployment configuration and bounded waits of the ServerApp, on a stand-in grid (no engine needed)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

from hf_trust.errors import FederationTimeout, HFTrustConfigError  # noqa: E402


class _Reply:
    """What the handshake reads from a SuperNode's reply."""

    def __init__(self, node: int, partition: int, num_partitions=None, reply_to: str = ""):
        from flwr.app import ConfigRecord

        from hf_trust.trainers.federated.flower._records import CLIENT_RECORD_KEY

        rec = ConfigRecord({"partition-id": partition, "num-examples": 10})
        if num_partitions is not None:
            rec["num-partitions"] = num_partitions
        self.metadata = SimpleNamespace(src_node_id=node, reply_to_message_id=reply_to)
        self.content = SimpleNamespace(config_records={CLIENT_RECORD_KEY: rec})

    def has_error(self):
        return False

    def has_content(self):
        return True


class _Grid:
    def __init__(self, nodes: dict[int, tuple]):
        self.nodes = nodes  # node id -> (partition, num_partitions)

    def get_node_ids(self):
        return list(self.nodes)

    def push_messages(self, msgs):
        self.sent = {str(i): m.metadata.dst_node_id for i, m in enumerate(msgs)}
        return list(self.sent)

    def pull_messages(self, ids):
        return [_Reply(self.sent[i], *self.nodes[self.sent[i]], reply_to=i) for i in ids]


@pytest.fixture
def query(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    # Messages built outside a running ServerApp: Flower reads the run id from the task's identity
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    from hf_trust.trainers.federated.flower.handshake import query_partitions

    def run(nodes, strict=True, num_clients=2):
        grid = _Grid(nodes)
        return query_partitions(grid, sorted(nodes), "", num_clients, 5.0, strict=strict)

    return run


def test_a_good_deployment_maps_partitions_to_nodes(query):
    assert query({11: (0, 2), 22: (1, 2)}) == {0: 11, 1: 22}


def test_a_partition_id_out_of_range_names_the_node_and_the_value(query):
    with pytest.raises(HFTrustConfigError, match=r"SuperNode 33 has partition-id=5, outside the app's 2 clients"):
        query({11: (0, 2), 33: (5, 2)})
    # more SuperNodes than partitions: the third one's id is out of range
    with pytest.raises(HFTrustConfigError, match=r"SuperNode 44 has partition-id=2"):
        query({11: (0, 2), 22: (1, 2), 44: (2, 3)})
    # a simulation sized for a larger federation leaves such SuperNodes idle
    assert query({11: (0, 2), 22: (1, 2), 44: (2, 3)}, strict=False) == {0: 11, 1: 22}


def test_a_disagreeing_num_partitions_names_the_node_and_the_value(query):
    with pytest.raises(HFTrustConfigError, match=r"SuperNode 22 \(partition-id=1\) has num-partitions=3.*federates 2"):
        query({11: (0, 2), 22: (1, 3)})


def test_duplicate_partition_ids_name_both_nodes(query):
    with pytest.raises(HFTrustConfigError, match=r"SuperNodes 11 and 22 both host partition 0"):
        query({11: (0, 2), 22: (0, 2)})


def test_waiting_for_supernodes_is_bounded():
    from hf_trust.trainers.federated.flower.handshake import wait_for_nodes
    from hf_trust.trainers.federated.flower.strategy import PartitionGrid

    t0 = time.monotonic()
    with pytest.raises(FederationTimeout, match=r"only 1 of 2 SuperNodes connected within 1 s"):
        wait_for_nodes(_Grid({11: (0, 2)}), 2, 1.0)
    assert time.monotonic() - t0 < 5
    # a Flower strategy polling for min_available_nodes: past node-timeout the partitions that are gone are named
    grid = PartitionGrid(_Grid({11: (0, 2)}), {0: 11, 1: 22})
    grid.begin_wait(0.2)
    assert grid.get_node_ids() == [11]
    time.sleep(0.3)
    with pytest.raises(FederationTimeout, match=r"partitions \[1\] are gone"):
        grid.get_node_ids()
    grid.end_wait()
    assert grid.get_node_ids() == [11]
