"""hf-trust's federated core as a Flower app (see task.py)."""
