"""Former home of the Flower engine, kept as an import path: the ServerApp loop is in :mod:`.server`, the handshake
in :mod:`.handshake`, the Simulation Engine driver in :mod:`.simulation`."""

from .server import FlowerFederation, short_reason
from .simulation import default_backend_config, run_simulations

__all__ = ["FlowerFederation", "default_backend_config", "run_simulations", "short_reason"]
