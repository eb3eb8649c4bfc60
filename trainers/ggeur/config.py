"""Configuration of GGEUR (defaults from the official code, spec b)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

from hf_trust.errors import HFTrustConfigError


@dataclass
class GGEURConfig:
    """Options of GGEUR's statistics round, global shapes and local augmentation.

    Args:
        mode (`str`, defaults to `"single_domain"`):
            ``"single_domain"`` (label skew: fill each held class along its global shape) or
            ``"multi_domain"`` (domain skew: additionally sample around other domains' class prototypes).
        scale (`str`, defaults to `"sqrt"`):
            ``"sqrt"``: offsets ``ε·sqrt(λ)·ξ`` as in the released code (a Gaussian with the global
            covariance); ``"linear"``: ``ε·λ·ξ`` as the paper's equation is quoted.
        guide_threshold (`float` or `None`, defaults to `0.8`):
            Single-domain shapes pool only the clients holding the top 80 % of a class's samples
            (the official "guide set"); ``None`` pools every client.  Multi-domain mode always pools every
            client, as the official multi-domain code does.
        stats_form (`str`, defaults to `"moments"`):
            What clients send per class: ``"moments"`` = (S0, S1, S2) or ``"mean_cov"`` = (n, μ, Σ) as in the
            official code; both pool to the same covariance.
        target_per_class (`int` or `None`, defaults to `None`):
            Single domain: the per-class count every client fills up to; ``None`` uses the global count of
            the class (the official choice: CIFAR-10's 5000).  Multi domain: the per-class target (official
            Digits value 2000 when ``None``).
        per_sample (`int` or `None`, defaults to `None`):
            Single domain: draws around each real row when a class has fewer rows than it needs; ``None``
            uses the official 5000/500 (10 classes) or 500/50 (more classes) by n < 10 or not.
        num_per_sample, step1_keep, prototype_draws (`int`, defaults to `12`, `500`, `500`):
            Multi-domain Step 1 draws per real row, how many of them are kept, and draws per prototype
            (official Digits values).
        boost_which (`str`, defaults to `"smallest"`):
            Multi-domain eigenvalue boost: ``"smallest"`` reproduces the code (it scales ``eigh``'s first,
            i.e. smallest, 10 eigenvalues by ``linspace(5, 1, 10)``), ``"largest"`` what its comment says,
            ``"none"`` switches it off.  Single-domain mode never boosts (as in the code).
        boost_k, boost_max (`int`, `float`, defaults to `10`, `5.0`): how many eigenvalues and the top factor.
        class_chunk_size (`int`, defaults to `16`):
            Classes reduced across processes at a time: C·d² float64 can be hundreds of MB.
        normalize (`bool`, defaults to `False`):
            L2-normalise real, synthetic and test embeddings alike (the official code normalises nothing).
        compat (`str`, defaults to `"correct"`):
            ``"official"`` reproduces the released script's quirks: clients never receive the global head
            (only the server copy is averaged), unweighted averaging, the double softmax in the loss,
            surplus real rows dropped and "first prototype draws" in multi-domain mode.  The unweighted mean
            is the strategy's to do: with ``"official"``, :class:`GGEURTrainer` refuses a strategy that
            weighs clients by their rows (pass ``FedAvg(weighted=False)``).
        augment (`str`, defaults to `"ggeur"`):
            What fills each client up: ``"ggeur"`` (draws along the global shapes), ``"none"`` (real rows only,
            plain FedAvg), ``"oversample"`` (the equal-count control: real rows resampled to the same per-class
            counts, without noise and, in multi-domain mode, without other domains' prototypes),
            ``"isotropic"`` (noise of the same trace without the global directions) or ``"local_cov"`` (the
            client's own covariance).
        keep_augmented (`bool`, defaults to `False`):
            Keep every client's augmented rows after ``fit`` (``trainer.partitions.augmented(k)``); they can
            take gigabytes (clients × classes × target × d), so they are dropped by default.
        local_epochs (`int` or `None`, defaults to `None`):
            Not a second setting: the head's local epochs per round are ``FederatedConfig.local_epochs`` (the
            released code trains 10; ``FederatedConfig`` defaults to 1).  ``None`` defers to it; a number must
            equal it, or :class:`GGEURTrainer` raises instead of silently picking one of the two.
        lr, batch_size, num_classes, seed: training of the linear head (Adam, a new optimiser each round as in
            the code) and the seed of every random draw.
    """

    mode: Literal["single_domain", "multi_domain"] = "single_domain"
    scale: Literal["sqrt", "linear"] = "sqrt"
    guide_threshold: Optional[float] = 0.8
    stats_form: Literal["moments", "mean_cov"] = "moments"
    target_per_class: Optional[int] = None
    per_sample: Optional[int] = None
    num_per_sample: int = 12
    step1_keep: int = 500
    prototype_draws: int = 500
    boost_which: Literal["smallest", "largest", "none"] = "smallest"
    boost_k: int = 10
    boost_max: float = 5.0
    class_chunk_size: int = 16
    normalize: bool = False
    compat: Literal["correct", "official"] = "correct"
    augment: Literal["ggeur", "none", "oversample", "isotropic", "local_cov"] = "ggeur"
    keep_augmented: bool = False
    lr: float = 1e-3
    batch_size: int = 64
    local_epochs: Optional[int] = None
    num_classes: Optional[int] = None
    seed: int = 0

    def __post_init__(self) -> None:
        choices = {
            "mode": ("single_domain", "multi_domain"),
            "scale": ("sqrt", "linear"),
            "stats_form": ("moments", "mean_cov"),
            "boost_which": ("smallest", "largest", "none"),
            "compat": ("correct", "official"),
            "augment": ("ggeur", "none", "oversample", "isotropic", "local_cov"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise HFTrustConfigError(f"GGEURConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.guide_threshold is not None and not 0 < self.guide_threshold <= 1:
            raise HFTrustConfigError(
                f"GGEURConfig.guide_threshold must be in (0, 1] or None, got {self.guide_threshold}."
            )
        for name in (
            "num_per_sample",
            "step1_keep",
            "prototype_draws",
            "class_chunk_size",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise HFTrustConfigError(f"GGEURConfig.{name} must be ≥ 1, got {getattr(self, name)}.")
        if self.local_epochs is not None and self.local_epochs < 1:
            raise HFTrustConfigError(
                f"GGEURConfig.local_epochs must be ≥ 1 or None, got {self.local_epochs}; set the local epochs "
                f"in FederatedConfig(local_epochs=...) and leave this None."
            )

    def to_dict(self) -> dict:
        return asdict(self)


def check_federation(config: GGEURConfig, fed_config: Any, strategy: Any = None) -> None:
    """The federated settings GGEUR shares with the core must agree with ``config`` (one source of truth).

    * Local epochs live in ``fed_config``; ``config.local_epochs``, when set, must equal them.
    * ``compat="official"`` reproduces the released script's unweighted mean of client heads, so a strategy
      that weighs clients by their rows contradicts it.
    """
    if config.local_epochs is not None and config.local_epochs != fed_config.local_epochs:
        raise HFTrustConfigError(
            f"GGEURConfig.local_epochs={config.local_epochs} but FederatedConfig.local_epochs="
            f"{fed_config.local_epochs}: the head's local epochs are set once, in FederatedConfig. Use "
            f"FederatedConfig(local_epochs={config.local_epochs}) and leave GGEURConfig.local_epochs unset "
            f"(the released code trains 10)."
        )
    if config.compat == "official" and getattr(strategy, "weighted", False):
        raise HFTrustConfigError(
            f"GGEURConfig(compat='official') reproduces the released script's unweighted mean of client heads, "
            f"but the strategy {type(strategy).__name__}(weighted=True) weighs clients by their rows. Pass "
            f"{type(strategy).__name__}(weighted=False), or use compat='correct'."
        )
