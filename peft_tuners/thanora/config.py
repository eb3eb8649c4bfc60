"""Configuration of ThanoRA.

The paper's body and code were not available when this was written (the official repository holds only the
abstract and the method figure; a renewed search of arXiv 2505.18640 v1/v2, the OpenReview page and the
official repository found no method section).  What is known beyond the abstract comes from the public
reviews and the method figure: a shared cooperative block of rank ⌊r/(T+1)⌋ exempt from the regulariser,
an entropy-driven split with a temperature τ and a scaling factor γ, task blocks initialised by a truncated
SVD of an activation-covariance-informed matrix from a small instruction preview, and a pairwise
("decomposed") orthogonality regulariser between task blocks.  The exact formulas below are therefore a
documented reconstruction, every choice exposed as an option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

from peft.utils import PeftType

from hf_trust.errors import HFTrustConfigError

from .._lora_family import LoraFamilyConfig

ALLOCATIONS = ("softmax", "entropy", "uniform", "manual")
STATISTICS = ("activation", "gradient")
TASK_INITS = ("covariance", "spectrum", "random")
FACTORS = ("both", "A", "B")

#: Default temperature of each entropy-driven rule (``allocation_temperature=None`` resolves to these).
DEFAULT_TEMPERATURE = {"softmax": 0.05, "entropy": 1.0}


def _finite(name: str, value, *, low: Optional[float] = None, low_open: bool = False, high: Optional[float] = None):
    """Raise a clear error unless ``value`` is a finite real number in the allowed range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and low is not None:
        ok = float(value) > low if low_open else float(value) >= low
    if ok and high is not None:
        ok = float(value) <= high
    if not ok:
        rng = ""
        if low is not None:
            rng += f" {'>' if low_open else '≥'} {low}"
        if high is not None:
            rng += f"{' and' if rng else ''} ≤ {high}"
        raise HFTrustConfigError(f"ThanoRAConfig.{name} must be a finite number{rng}, got {value!r}.")


def _count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HFTrustConfigError(f"ThanoRAConfig.{name} must be an integer ≥ {minimum}, got {value!r}.")


@dataclass
class ThanoRAConfig(LoraFamilyConfig):
    """LoRA whose per-layer rank ``r`` holds T contiguous task blocks followed by one shared cooperative block.

    Rows of A / columns of B are laid out as ``[task 1 | task 2 | … | task T | cooperative]``, so the update is
    ``ΔW = s·(Σ_t B_t A_t + B_c A_c) = s·BA``: one ordinary LoRA that merges and exports as such.  Every
    ``LoraConfig`` field applies; ``r`` is the per-layer total.  Added fields:

    Args:
        task_names (`list[str]`): the tasks of the mixture (≥ 2), in block order.
        cooperative_rank (`str | int`, defaults to `"auto"`):
            Rank of the shared cooperative block of every layer.  ``"auto"`` = ⌊r/(T+1)⌋ (the size the paper's
            reviews describe), lowered if needed so that every task keeps ``min_rank_per_task``; an integer sets
            it directly; ``0`` switches the block off.  The block is initialised randomly like LoRA and is exempt
            from the regulariser; the task ranks of a layer sum to ``r − cooperative_rank``.
        rank_allocation (`str`, defaults to `"softmax"`):
            How the task budget R = r − cooperative_rank of each layer is split (needs :func:`preprocess_thanora`
            for the entropy rules).  ``"softmax"``: w_t = (1 − γ)/T + γ·softmax_t(H_t/τ) (reconstruction, see
            :func:`~hf_trust.peft_tuners.thanora.layer.softmax_allocation`); ``"entropy"``: the earlier rule
            w_t ∝ H_t^τ; ``"uniform"``: R/T; ``"manual"``: ``manual_ranks`` in every layer.  Ranks are then
            largest-remainder rounded with ``min_rank_per_task`` each.
        allocation_statistic (`str`, defaults to `"activation"`):
            Matrix whose normalised singular-value entropy H_t measures task complexity: ``"activation"`` = layer
            inputs on the task's tokens (padding excluded); ``"gradient"`` = mean ∂L_t/∂W (LoRA-GA style).
        allocation_temperature (`float`, optional):
            τ.  For ``"softmax"`` the softmax temperature (default 0.05: normalised entropies of tasks differ by a
            few hundredths, so τ = 1 would be uniform); for ``"entropy"`` the exponent (default 1).
        allocation_scale (`float`, defaults to `1.0`):
            γ ∈ [0, 1] of the ``"softmax"`` rule: the share of the budget that follows the entropies (0 = uniform).
        min_rank_per_task (`int`, defaults to `1`): r_min, every task keeps at least this many ranks.
        manual_ranks (`list[int]`, optional): the split used by ``rank_allocation="manual"``; sums to the task budget.
        task_init (`str`, defaults to `"covariance"`):
            Initial A rows of each task block.  ``"covariance"``: top right singular vectors of W·C_t with
            C_t = X_tᵀX_t/N the task's input covariance over its preview (CorDA-like, truncated SVD);
            ``"spectrum"``: top right singular vectors of the allocation statistic itself (the earlier init);
            ``"random"``: PEFT's random LoRA init.  B starts at 0 in every case, so the model is unchanged.
        preview_samples_per_task (`int`, defaults to `500`):
            Examples per task read (streamed, batch by batch) by :func:`preprocess_thanora`; the covariances are
            accumulated on the fly, so memory does not grow with this number.
        orthogonal_init (`bool`, defaults to `True`):
            Gram-Schmidt the stacked task bases in task order so the initial task subspaces are orthogonal.
        init_row_norm (`float`, defaults to `1/√3`):
            Norm of each initial task row of A; 1/√3 is the expected row norm of PEFT's Kaiming-uniform LoRA init,
            so the learning dynamics stay those of the baseline.
        subspace_lambda (`float`, defaults to `1e-2`):
            λ of the pairwise task-block term Σ_{t<s} ‖Â_t Â_sᵀ‖² + ‖B_tᵀ B_s‖² (rows of A L2-normalised; columns
            of B as they are unless ``normalize_B``), mean over layers.  The cooperative block never enters it.
        normalize_B (`bool`, defaults to `False`):
            Whether the B term uses L2-normalised columns, ‖B̂_tᵀ B̂_s‖², instead of the plain product ‖B_tᵀ B_s‖².
            Why not by default: B starts at 0 (so that ΔW = 0), and a term in normalised columns is invariant to
            each column's scale, so its gradient scales like 1/‖b‖ and is unbounded exactly where LoRA starts.
            After one AdamW step the columns have norm ≈ lr·√d_out, and the regulariser's gradient exceeded the
            task's (measured on a tiny Qwen2: 2.3× at lr 1e-3, 58× at 5e-5); under gradient clipping that
            shrinks the task's update, and with Adam it sets the direction of B's first updates.  No λ warm-up
            fixes this for small learning rates (the ratio grows as 1/lr).  The plain product is zero with a
            zero gradient at B = 0 and grows like ‖b‖⁴, i.e. it acts once B has norm (the form orthogonality
            penalties between low-rank factors usually take); the price is that it also pulls overlapping
            columns towards smaller norm.  A is not affected: its rows start at ``init_row_norm`` and keep
            their normalisation.  ``True`` restores the earlier form (the spec's reconstruction).
        subspace_factors (`str`, defaults to `"both"`): which factors the regulariser acts on: ``"A"``, ``"B"`` or
            ``"both"`` (the paper does not say).
        intra_lambda (`float`, defaults to `0.0`): λ_in of the within-block anti-collapse term Σ_t ‖Â_t Â_tᵀ − I‖².
        use_dora (`bool`, defaults to `False`): LoRA's option, allowed: the task and cooperative blocks partition A
            and B as usual and DoRA's magnitude rescales the whole update; such an adapter cannot be exported as
            plain LoRA (``export_as_lora`` refuses it) and the method was not described with DoRA.
        regularize_B (`bool`, defaults to `True`): older switch, kept so saved adapters load; ``False`` means
            ``subspace_factors="A"``.
        calib_tokens_per_task (`int`, defaults to `2048`):
            N, tokens per task per layer used by the activation entropy (the same N for every task: the entropy
            depends on N when N < d_in).
        task_rank_map (`dict[str, list[int]]`): module name → task ranks (the cooperative rank is r minus their
            sum); filled by preprocessing or at injection and saved with the adapter so reloading rebuilds
            identical blocks.
        task_entropy_map (`dict[str, list[float]]`): module name → normalised entropies per task (diagnostics).
        allocation_recorded (`bool`, defaults to `False`):
            Set once ``task_rank_map`` holds every target module; a saved adapter with it set whose map lacks a
            module is refused on load instead of silently falling back to a uniform split.
    """

    task_names: list[str] = field(default_factory=list, metadata={"help": "tasks of the mixture, block order"})
    cooperative_rank: Union[str, int] = field(default="auto", metadata={"help": "'auto' = r // (T+1), int, 0 = off"})
    rank_allocation: str = field(default="softmax", metadata={"help": "softmax | entropy | uniform | manual"})
    allocation_statistic: str = field(default="activation", metadata={"help": "activation | gradient"})
    allocation_temperature: Optional[float] = field(default=None, metadata={"help": "tau (rule-dependent default)"})
    allocation_scale: float = field(default=1.0, metadata={"help": "gamma in [0, 1] of the softmax rule"})
    min_rank_per_task: int = field(default=1, metadata={"help": "minimum rank of every task block"})
    manual_ranks: Optional[list[int]] = field(default=None, metadata={"help": "ranks for 'manual' allocation"})
    task_init: str = field(default="covariance", metadata={"help": "covariance | spectrum | random"})
    preview_samples_per_task: int = field(default=500, metadata={"help": "examples per task read at preprocessing"})
    orthogonal_init: bool = field(default=True, metadata={"help": "orthogonalise task bases at init"})
    init_row_norm: float = field(default=3**-0.5, metadata={"help": "norm of each initial A row"})
    subspace_lambda: float = field(default=1e-2, metadata={"help": "weight of the cross-block regulariser"})
    subspace_factors: str = field(default="both", metadata={"help": "A | B | both"})
    normalize_B: bool = field(default=False, metadata={"help": "B term on unit columns (earlier form)"})
    intra_lambda: float = field(default=0.0, metadata={"help": "weight of the within-block anti-collapse term"})
    regularize_B: bool = field(default=True, metadata={"help": "older switch; False = subspace_factors 'A'"})
    calib_tokens_per_task: int = field(default=2048, metadata={"help": "tokens per task per layer"})
    task_rank_map: dict[str, list[int]] = field(default_factory=dict, metadata={"help": "module -> task ranks"})
    task_entropy_map: dict[str, list[float]] = field(default_factory=dict, metadata={"help": "module -> entropies"})
    allocation_recorded: bool = field(default=False, metadata={"help": "task_rank_map covers every module"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.THANORA
        self._check_tasks()
        self._check_settings()
        if not self.regularize_B and self.subspace_factors == "both":
            self.subspace_factors = "A"  # the older switch, as saved by earlier versions
        self._check_budgets()

    def _check_tasks(self) -> None:
        names = list(self.task_names or [])
        if len(names) < 2:
            raise HFTrustConfigError(
                f"ThanoRAConfig needs at least 2 task_names (got {names}); with one task use a plain LoraConfig."
            )
        if len(set(names)) != len(names):
            raise HFTrustConfigError(f"ThanoRAConfig.task_names must be unique, got {names}.")
        self.task_names = names

    def _check_settings(self) -> None:
        for fname, allowed in (
            ("rank_allocation", ALLOCATIONS),
            ("allocation_statistic", STATISTICS),
            ("task_init", TASK_INITS),
            ("subspace_factors", FACTORS),
        ):
            if getattr(self, fname) not in allowed:
                raise HFTrustConfigError(
                    f"ThanoRAConfig.{fname} must be one of {allowed}, got {getattr(self, fname)!r}."
                )
        if self.allocation_temperature is not None:
            _finite("allocation_temperature", self.allocation_temperature, low=0.0, low_open=True)
        _finite("allocation_scale", self.allocation_scale, low=0.0, high=1.0)
        _finite("subspace_lambda", self.subspace_lambda, low=0.0)
        _finite("intra_lambda", self.intra_lambda, low=0.0)
        _finite("init_row_norm", self.init_row_norm, low=0.0, low_open=True)
        _count("min_rank_per_task", self.min_rank_per_task, 1)
        _count("calib_tokens_per_task", self.calib_tokens_per_task, 1)
        _count("preview_samples_per_task", self.preview_samples_per_task, 1)
        coop = self.cooperative_rank
        if not (coop == "auto" or (isinstance(coop, int) and not isinstance(coop, bool) and coop >= 0)):
            raise HFTrustConfigError(
                f"ThanoRAConfig.cooperative_rank must be 'auto', 0 (off) or a positive integer, got {coop!r}."
            )
        if not isinstance(self.normalize_B, bool):
            raise HFTrustConfigError(f"ThanoRAConfig.normalize_B must be True or False, got {self.normalize_B!r}.")

    def _check_budgets(self) -> None:
        """Every layer rank (``r`` and ``rank_pattern``) leaves each task ``min_rank_per_task``; manual ranks fit."""
        n_tasks, r_min = len(self.task_names), self.min_rank_per_task
        for r in sorted({int(self.r)} | {int(v) for v in (self.rank_pattern or {}).values()}):
            budget, coop = self.task_budget(r), self.cooperative_rank_for(r)
            if budget < n_tasks * r_min:
                raise HFTrustConfigError(
                    f"ThanoRAConfig: rank r={r} with cooperative_rank={coop} leaves {budget} rank(s), too few for "
                    f"{n_tasks} tasks ≥ {r_min} each; raise r to at least {n_tasks * r_min + coop}, lower "
                    "cooperative_rank or lower min_rank_per_task."
                )
        if self.rank_allocation != "manual":
            return
        budget = self.task_budget(self.r)
        if not self.manual_ranks or len(self.manual_ranks) != n_tasks or sum(self.manual_ranks) != budget:
            raise HFTrustConfigError(
                f"ThanoRAConfig.manual_ranks: rank_allocation='manual' needs one entry per task summing to "
                f"r − cooperative_rank = {budget}, got {self.manual_ranks}."
            )
        if min(self.manual_ranks) < r_min:
            raise HFTrustConfigError(
                f"ThanoRAConfig.manual_ranks {self.manual_ranks} go below min_rank_per_task={r_min}."
            )

    # ------------------------------------------------------------------ derived values
    def cooperative_rank_for(self, r: int) -> int:
        """Cooperative rank of a layer of LoRA rank ``r`` (``"auto"``: ⌊r/(T+1)⌋, never starving a task)."""
        t = len(self.task_names)
        if self.cooperative_rank == "auto":
            return max(0, min(int(r) // (t + 1), int(r) - t * self.min_rank_per_task))
        return int(self.cooperative_rank)

    def task_budget(self, r: int) -> int:
        """Ranks the task blocks of a layer of LoRA rank ``r`` share: ``r − cooperative_rank_for(r)``.

        The one place this difference is computed: validation, preprocessing, injection and the cache check
        all ask for it here."""
        return int(r) - self.cooperative_rank_for(r)

    @property
    def temperature(self) -> float:
        """τ actually used (the rule's default when ``allocation_temperature`` is None)."""
        if self.allocation_temperature is not None:
            return float(self.allocation_temperature)
        return DEFAULT_TEMPERATURE.get(self.rank_allocation, 1.0)

    @property
    def needs_preprocessing(self) -> bool:
        """Whether the allocation or the init reads data (then :func:`preprocess_thanora` must run first)."""
        return self.rank_allocation in ("softmax", "entropy") or self.task_init != "random"
