"""The ClientApp: every SuperNode trains hf-trust's SupervisedClientTrainer on its partition of ``num-clients``."""

import functools

from flwr.app import Context

from hf_trust.trainers.federated.flower.client import ClientRuntime, build_client_app
from hf_trust_flower_app.task import make_federation, num_clients


@functools.lru_cache(maxsize=4)
def _runtime_for(n: int) -> ClientRuntime:
    fed, parts = make_federation(num_clients=n)
    return fed.client_runtime(parts)


def _runtime(context: Context) -> ClientRuntime:
    return _runtime_for(num_clients(context))


app = build_client_app(factory=_runtime)
