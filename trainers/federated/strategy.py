"""Server strategies: how client updates become the next global parameters.

Every strategy sees the same two numbers per client (its trainable parameters and its example count)
and the aggregation is a weighted mean, so it can be computed as ``reduce(Σ w_k θ_k) / reduce(Σ w_k)``
across processes.  What differs is the weight (:meth:`Strategy.client_weight`), an optional term in the
client loss (:meth:`Strategy.client_loss_term`, FedProx) and the server step that turns the mean into
the new global parameters (:meth:`Strategy.server_update`, FedOpt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from hf_trust.errors import HFTrustConfigError

Params = dict[str, torch.Tensor]


class Strategy:
    """FedAvg-shaped strategy interface."""

    name = "strategy"
    weighted: bool = True

    def client_weight(self, num_examples: int) -> float:
        return float(num_examples) if self.weighted else 1.0

    def client_loss_term(self, params: Params, global_params: Params) -> Optional[torch.Tensor]:
        """Extra term added to each local step's loss (``None``: nothing)."""
        return None

    def server_update(self, global_params: Params, mean_params: Params) -> Params:
        return {k: v.clone() for k, v in mean_params.items()}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class FedAvg(Strategy):
    """Federated averaging.  ``weighted=True`` weighs clients by their example counts, else equally."""

    weighted: bool = True
    name: str = field(default="fedavg", init=False)


@dataclass
class FedProx(Strategy):
    """FedAvg plus the proximal term ``μ/2 ‖θ − θ_global‖²`` in every client's loss (μ = 0 is FedAvg)."""

    mu: float = 0.01
    weighted: bool = True
    name: str = field(default="fedprox", init=False)

    def __post_init__(self):
        if self.mu < 0:
            raise HFTrustConfigError(f"FedProx mu must be ≥ 0, got {self.mu}.")

    def client_loss_term(self, params: Params, global_params: Params) -> Optional[torch.Tensor]:
        if self.mu == 0:
            return None
        total = sum(((params[k] - global_params[k].to(params[k].device)) ** 2).sum() for k in params)
        return 0.5 * self.mu * total


@dataclass
class FedOpt(Strategy):
    """Adaptive server optimisers (Reddi et al., 2021): the mean client change is a pseudo-gradient
    ``Δ = mean − global`` and the server takes an Adam / Yogi / Adagrad / SGD step along it.

    Args:
        server_optimizer: ``"adam"``, ``"yogi"``, ``"adagrad"`` or ``"sgd"``.
        server_lr: η; beta1, beta2: moment decay; tau: adaptivity ε.
    """

    server_optimizer: str = "adam"
    server_lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    weighted: bool = True
    name: str = field(default="fedopt", init=False)
    _m: dict = field(default_factory=dict, init=False, repr=False)
    _v: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.server_optimizer not in ("adam", "yogi", "adagrad", "sgd"):
            raise HFTrustConfigError(
                f"server_optimizer must be 'adam', 'yogi', 'adagrad' or 'sgd', got {self.server_optimizer!r}."
            )

    def server_update(self, global_params: Params, mean_params: Params) -> Params:
        out = {}
        for k, g in global_params.items():
            delta = mean_params[k].double() - g.double()
            if self.server_optimizer == "sgd":
                out[k] = (g.double() + self.server_lr * delta).to(g.dtype)
                continue
            m = self._m.get(k, torch.zeros_like(delta))
            v = self._v.get(k, torch.full_like(delta, self.tau**2))
            m = self.beta1 * m + (1 - self.beta1) * delta
            d2 = delta * delta
            if self.server_optimizer == "adam":
                v = self.beta2 * v + (1 - self.beta2) * d2
            elif self.server_optimizer == "yogi":
                v = v - (1 - self.beta2) * d2 * torch.sign(v - d2)
            else:
                v = v + d2
            self._m[k], self._v[k] = m, v
            out[k] = (g.double() + self.server_lr * m / (v.sqrt() + self.tau)).to(g.dtype)
        return out

    def state_dict(self) -> dict:
        return {"m": {k: v.clone() for k, v in self._m.items()}, "v": {k: v.clone() for k, v in self._v.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._m = dict(state.get("m", {}))
        self._v = dict(state.get("v", {}))


def FedAdam(**kw) -> FedOpt:
    """FedOpt with the Adam server optimiser."""
    return FedOpt(server_optimizer="adam", **kw)


_BY_NAME = {"fedavg": FedAvg, "fedprox": FedProx, "fedopt": FedOpt, "fedadam": FedAdam}


def get_strategy(name: str, **kwargs) -> Strategy:
    """Build a strategy by name (``fedavg``, ``fedprox``, ``fedopt``, ``fedadam``)."""
    try:
        return _BY_NAME[name.lower()](**kwargs)
    except KeyError:
        raise HFTrustConfigError(f"unknown strategy {name!r}; choose one of {sorted(_BY_NAME)}.") from None
