"""The ServerApp's handshake: which SuperNode hosts which partition (bounded waits, loud configuration errors)."""

from __future__ import annotations

import time
from typing import Optional

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from hf_trust.errors import FederationError, FederationTimeout, HFTrustConfigError

from ._records import CLIENT_RECORD_KEY, JOB_KEY
from .client import ACTION_KEY, QUERY_ACTION
from .strategy import reply_partition, send_and_receive


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    """Wait (at most ``timeout`` seconds) until ``expected`` SuperNodes are connected; their node ids, sorted."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise FederationTimeout(
                f"only {len(list(grid.get_node_ids()))} of {expected} SuperNodes connected within {timeout:.0f} s "
                f"(handshake_timeout); start the missing SuperNodes or lower the number of clients."
            )
        time.sleep(0.5)
    return sorted(grid.get_node_ids())


def query_partitions(
    grid: Grid,
    node_ids: list[int],
    job: str,
    num_clients: Optional[int],
    timeout: float,
    strict: bool,
    poll: float = 0.1,
) -> dict[int, int]:
    """Ask ``node_ids`` which partition each hosts; partition id → node id.

    ``strict`` (a deployment): a partition id outside ``[0, num_clients)`` or a ``num-partitions`` that disagrees
    with the app is an error naming the node and the value.  Otherwise (a simulation sized for a larger
    federation) such SuperNodes are left idle.  Two SuperNodes with one partition id are always an error.
    """
    cfg = ConfigRecord({JOB_KEY: job, ACTION_KEY: "info"})
    msgs = [
        Message(RecordDict({"config": cfg}), dst_node_id=n, message_type=f"{MessageType.QUERY}.{QUERY_ACTION}")
        for n in node_ids
    ]
    replies = send_and_receive(grid, msgs, timeout, poll) if msgs else []
    nodes: dict[int, int] = {}
    # replies come in arrival order; node order makes every message below name the same nodes in every run
    for msg in sorted(replies, key=lambda m: m.metadata.src_node_id):
        node = msg.metadata.src_node_id
        if msg.has_error():
            raise FederationError(f"SuperNode {node} failed the handshake: {msg.error.reason}")
        k = reply_partition(msg)
        if k is None:
            continue  # not an hf-trust client
        if num_clients is not None and not 0 <= k < num_clients:
            if strict:
                raise HFTrustConfigError(
                    f"SuperNode {node} has partition-id={k}, outside the app's {num_clients} clients; start it "
                    f'with --node-config "partition-id=<k> num-partitions={num_clients}", k in [0, {num_clients}).'
                )
            continue
        declared = msg.content.config_records[CLIENT_RECORD_KEY].get("num-partitions")
        if strict and num_clients is not None and declared is not None and int(declared) != num_clients:
            raise HFTrustConfigError(
                f"SuperNode {node} (partition-id={k}) has num-partitions={int(declared)}, but the app federates "
                f"{num_clients} clients; give every SuperNode num-partitions={num_clients} (or set num-clients "
                f"in the run config to match)."
            )
        if k in nodes:
            raise HFTrustConfigError(
                f"SuperNodes {nodes[k]} and {node} both host partition {k}; give each SuperNode its own partition-id."
            )
        nodes[k] = node
    return nodes
