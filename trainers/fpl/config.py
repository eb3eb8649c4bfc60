"""Configuration of the prompts and of a federated prompt-learning run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from hf_trust.errors import FPLConfigError
from hf_trust.trainers.federated import FederatedConfig

_KINDS = {"lpt": "lpt", "text": "lpt", "language": "lpt", "vpt": "vpt", "vision": "vpt", "both": "both", "ivlp": "both"}


@dataclass
class PromptConfig:
    """Which prompts are learnt on the frozen CLIP.

    Args:
        kind: ``"lpt"`` (language prompt, CoOp context tokens), ``"vpt"`` (vision prompt tokens) or
            ``"both"`` (the two trained jointly and independently, IVLP).  ``"text"``/``"vision"`` are aliases.
        n_ctx_text: learnable context tokens of LPT; they take positions 1..n_ctx, the class name follows
            (class token at the end), as in the study's LPT trainer.
        n_ctx_vision: learnable tokens of VPT, appended after ``[CLS, patches] + positional embedding``.
        depth_text / depth_vision: 1 = shallow.  Depth L gives layers 1..L-1 their own tensor, which
            replaces the prompt positions at that layer's input (deep prompts).
        init_phrase: with ``n_ctx_text`` equal to the phrase's token count, LPT starts from the phrase's
            token embeddings (e.g. ``"a photo of a"``); otherwise the context is random.  The study's rule
            only copies the phrase when ``n_ctx <= 4``; here any length that matches is accepted.
        init_std: std of the N(0, std^2) init of random prompts (0.02 in the study's code).
        placeholder: text token standing for each random context slot in the tokenised prompt (its
            embedding is overwritten, so only the token count matters).
        vision_template: class-prompt template of the text side when LPT is off.
        seed: seeds the random prompt init.
    """

    kind: str = "lpt"
    n_ctx_text: int = 16
    n_ctx_vision: int = 16
    depth_text: int = 1
    depth_vision: int = 1
    init_phrase: Optional[str] = None
    init_std: float = 0.02
    placeholder: str = "X"
    vision_template: str = "a photo of a {}."
    seed: int = 0

    def __post_init__(self):
        key = str(self.kind).lower()
        if key not in _KINDS:
            raise FPLConfigError(f"PromptConfig.kind must be one of 'lpt', 'vpt', 'both', got {self.kind!r}.")
        self.kind = _KINDS[key]
        for name in ("n_ctx_text", "n_ctx_vision", "depth_text", "depth_vision"):
            if int(getattr(self, name)) < 1:
                raise FPLConfigError(f"PromptConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.init_std <= 0:
            raise FPLConfigError(f"PromptConfig.init_std must be > 0, got {self.init_std}.")
        if "{}" not in self.vision_template:
            raise FPLConfigError("PromptConfig.vision_template needs a '{}' where the class name goes.")

    @property
    def uses_text(self) -> bool:
        return self.kind in ("lpt", "both")

    @property
    def uses_vision(self) -> bool:
        return self.kind in ("vpt", "both")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FPLConfig(FederatedConfig):
    """A federated prompt-learning run: the federated core's options plus local optimisation.

    Defaults follow the study's code: SGD lr 1e-3, momentum 0.9, weight decay 5e-4, batch 32, one local
    epoch, all clients each round, the first m clients when ``client_fraction < 1`` (``sampling="first"``),
    50 rounds, weighted FedAvg (``aggregation="weight"``; ``"equal"`` gives every client 1/K).  One
    deviation: each client builds a fresh optimiser every round.  The study's code (Dassl ``trainer.py``)
    builds one optimiser for the whole run, so its momentum buffer carries from one client to the next and
    from round to round (a client's first steps move along the previous client's momentum), which is a bug
    of the released code and is not reproduced here.

    Args:
        lr / optimizer / momentum / weight_decay / batch_size: local training.
        eval_batch_size: images per evaluation batch.
        aggregation: ``"weight"`` or ``"equal"``; overrides the strategy's ``weighted`` flag (``None``: keep it).
        vptpr: project every local update of the vision prompts into the null space of the current
            global vision prompt (VPTPR); no effect in round 0 or without VPT.  Reconstructed (no released
            code): the study's VPTPR trainer is not released; its projection (``AdamSVD`` in ``fed_utils.py``)
            acts on Adam's update, while here it acts on the step of whichever optimiser runs, by default SGD
            with momentum 0.9 (``optimizer="adam"`` for the ``AdamSVD`` setting).
        vptpr_drop_ratio: share of the ``d`` singular directions of ``P^T P`` dropped (the top ones); the
            study's ``ratio = 0.8`` keeps 80 %.
        diagnostics: log the update cosines and client-client similarity every round.
    """

    rounds: int = 50
    sampling: str = "first"
    seed: int = 1
    lr: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32
    eval_batch_size: int = 128
    aggregation: Optional[str] = None
    vptpr: bool = False
    vptpr_drop_ratio: float = 0.2
    diagnostics: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.aggregation not in (None, "weight", "equal"):
            raise FPLConfigError(f"FPLConfig.aggregation must be 'weight' or 'equal', got {self.aggregation!r}.")
        if self.optimizer not in ("sgd", "adam"):
            raise FPLConfigError(f"FPLConfig.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        if not 0 <= self.vptpr_drop_ratio < 1:
            raise FPLConfigError(f"FPLConfig.vptpr_drop_ratio must be in [0, 1), got {self.vptpr_drop_ratio}.")
        if self.lr <= 0 or self.batch_size < 1:
            raise FPLConfigError("FPLConfig.lr must be > 0 and batch_size >= 1.")
