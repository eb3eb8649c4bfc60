"""Configuration of ThanoRA.

The paper's body and code were not available when this was written (the official repository holds only the
abstract and the method figure), so every choice beyond "per-layer, per-task singular-value entropy sets the
rank split; an orthogonality-type regulariser keeps the task blocks apart" is a documented option here.
A search for the method section (arXiv 2505.18640 v1/v2 HTML, OpenReview 6XoyxxAfv3) found only the abstracts
and a review summary naming "entropy-based rank allocation" and "decomposed orthogonality regularization";
the formulas below are therefore the reconstruction of the project spec, not the paper's equations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from peft import LoraConfig
from peft.utils import PeftType

ALLOCATIONS = ("entropy", "uniform", "manual")
STATISTICS = ("activation", "gradient")


@dataclass
class ThanoRAConfig(LoraConfig):
    """LoRA whose per-layer rank ``r`` is partitioned into contiguous task blocks (rows of A / columns of B).

    Every ``LoraConfig`` field applies; ``r`` is the per-layer total shared by all tasks.  Added fields:

    Args:
        task_names (`list[str]`): the tasks of the mixture (≥ 2), in block order.
        rank_allocation (`str`, defaults to `"entropy"`):
            ``"entropy"``: r_t ∝ H_t^τ per layer (needs :func:`preprocess_thanora`); ``"uniform"``: r/T per task;
            ``"manual"``: ``manual_ranks`` for every layer.
        allocation_statistic (`str`, defaults to `"activation"`):
            Matrix whose spectrum measures task complexity: ``"activation"`` = layer inputs on the task's tokens
            (padding excluded); ``"gradient"`` = mean ∂L_t/∂W (LoRA-GA style; sees output-rule differences).
        allocation_temperature (`float`, defaults to `1.0`): τ in r_t ∝ H_t^τ (larger → more uneven).
        min_rank_per_task (`int`, defaults to `1`): r_min, every task keeps at least this many ranks.
        manual_ranks (`list[int]`, optional): the split used by ``rank_allocation="manual"``; sums to ``r``.
        orthogonal_init (`bool`, defaults to `True`):
            Gram-Schmidt the stacked task bases in task order so the initial task subspaces are orthogonal.
        init_row_norm (`float`, defaults to `1/√3`):
            Norm of each initial A row; 1/√3 is the expected row norm of PEFT's Kaiming-uniform LoRA init, so
            the learning dynamics stay those of the baseline.
        subspace_lambda (`float`, defaults to `1e-2`):
            λ_sp of Σ_{t<s} ‖Â_t Â_sᵀ‖² + ‖B̂_tᵀ B̂_s‖² (rows of A / columns of B L2-normalised), mean over layers.
        intra_lambda (`float`, defaults to `0.0`): λ_in of the anti-collapse term Σ_t ‖Â_t Â_tᵀ − I‖².
        regularize_B (`bool`, defaults to `True`): include the B-column term of the regulariser.
        calib_tokens_per_task (`int`, defaults to `2048`):
            N, tokens per task per layer used by the activation statistic (the same N for every task: the
            entropy depends on N when N < d_in).
        task_rank_map (`dict[str, list[int]]`): module name → ranks per task; filled by preprocessing and saved
            with the adapter so reloading rebuilds identical blocks.
        task_entropy_map (`dict[str, list[float]]`): module name → normalised entropies per task (diagnostics).
    """

    task_names: list[str] = field(default_factory=list, metadata={"help": "tasks of the mixture, block order"})
    rank_allocation: str = field(default="entropy", metadata={"help": "entropy | uniform | manual"})
    allocation_statistic: str = field(default="activation", metadata={"help": "activation | gradient"})
    allocation_temperature: float = field(default=1.0, metadata={"help": "tau of r_t ~ H_t^tau"})
    min_rank_per_task: int = field(default=1, metadata={"help": "minimum rank of every task block"})
    manual_ranks: Optional[list[int]] = field(default=None, metadata={"help": "ranks for 'manual' allocation"})
    orthogonal_init: bool = field(default=True, metadata={"help": "orthogonalise task bases at init"})
    init_row_norm: float = field(default=3**-0.5, metadata={"help": "norm of each initial A row"})
    subspace_lambda: float = field(default=1e-2, metadata={"help": "weight of the cross-block regulariser"})
    intra_lambda: float = field(default=0.0, metadata={"help": "weight of the within-block anti-collapse term"})
    regularize_B: bool = field(default=True, metadata={"help": "regularise B columns too"})
    calib_tokens_per_task: int = field(default=2048, metadata={"help": "tokens per task per layer"})
    task_rank_map: dict[str, list[int]] = field(default_factory=dict, metadata={"help": "module -> task ranks"})
    task_entropy_map: dict[str, list[float]] = field(default_factory=dict, metadata={"help": "module -> entropies"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.THANORA
        names = list(self.task_names or [])
        if len(names) < 2:
            raise ValueError(
                f"ThanoRAConfig needs at least 2 task_names (got {names}); with one task use a plain LoraConfig."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"ThanoRAConfig.task_names must be unique, got {names}.")
        if self.rank_allocation not in ALLOCATIONS:
            raise ValueError(
                f"ThanoRAConfig.rank_allocation must be one of {ALLOCATIONS}, got {self.rank_allocation!r}."
            )
        if self.allocation_statistic not in STATISTICS:
            raise ValueError(
                f"ThanoRAConfig.allocation_statistic must be one of {STATISTICS}, got {self.allocation_statistic!r}."
            )
        if self.min_rank_per_task < 1:
            raise ValueError(f"ThanoRAConfig.min_rank_per_task must be ≥ 1, got {self.min_rank_per_task}.")
        ranks = [self.r] + [int(v) for v in (self.rank_pattern or {}).values()]
        if min(ranks) < len(names) * self.min_rank_per_task:
            raise ValueError(
                f"ThanoRAConfig: rank r={min(ranks)} cannot give {len(names)} tasks ≥ {self.min_rank_per_task} "
                f"rank(s) each; raise r to at least {len(names) * self.min_rank_per_task} or lower min_rank_per_task."
            )
        if self.rank_allocation == "manual":
            if not self.manual_ranks or len(self.manual_ranks) != len(names) or sum(self.manual_ranks) != self.r:
                raise ValueError(
                    f"rank_allocation='manual' needs manual_ranks with one entry per task summing to r={self.r}, "
                    f"got {self.manual_ranks}."
                )
            if min(self.manual_ranks) < self.min_rank_per_task:
                raise ValueError(
                    f"manual_ranks {self.manual_ranks} go below min_rank_per_task={self.min_rank_per_task}."
                )
        if self.use_dora:
            raise ValueError("ThanoRA does not support use_dora=True (the task blocks assume ΔW = s·BA).")
        if self.subspace_lambda < 0 or self.intra_lambda < 0:
            raise ValueError("ThanoRAConfig.subspace_lambda and intra_lambda must be ≥ 0.")
        if self.calib_tokens_per_task < 1:
            raise ValueError("ThanoRAConfig.calib_tokens_per_task must be ≥ 1.")
        self.task_names = names
