"""The ServerApp: Flower's FedAvg over the SuperNodes; history and global parameters go to run config output-dir."""

from hf_trust_flower_app.task import make_federation

_fed, _parts = make_federation()
app = _fed.server_app(_parts)
