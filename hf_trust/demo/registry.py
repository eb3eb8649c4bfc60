"""Recipe registration and the objects a recipe receives and returns."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from ..errors import HFTrustConfigError, HFTrustDataError, HFTrustKeyError, HFTrustStateError

logger = logging.getLogger("hf_trust.demo")


@dataclass
class ResultRow:
    """One line of the results table: a measured value under one setting."""

    setting: str
    metric: str
    value: float
    std: Optional[float] = None
    n: Optional[int] = None
    note: str = ""

    def formatted_value(self) -> str:
        text = f"{self.value:.4g}"
        if self.std is not None and (self.n is None or self.n > 1):  # no spread from a single run
            text += f" ± {self.std:.2g}"
        return text


#: The verdicts a claims-table row may carry.
VERDICTS = ("reproduced", "not at this size", "not reproduced")

#: Fewest seeds whose spread may carry a "reproduced" verdict; one seed is one draw of the data split, the
#: initialisation and the float rounding of the CPU at hand (the same seed gave a motif student at 0.667 on
#: one CPU and at chance on another), so a verdict from fewer seeds is marked as indicative.
MIN_SEEDS = 3


def seed_interval(values: Any) -> tuple[float, float]:
    """The interval a verdict over seeds is read from: min..max of the per-seed values (NaNs ignored).

    With three seeds min..max is the widest interval the seeds give (a t interval would need a normal
    spread that three draws cannot show); "reproduced" needs it to lie entirely on the claimed side
    of the control.
    """
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.min()), float(v.max())


def results_file(method: str) -> Optional[Path]:
    """``benchmarks/results/<method>.md`` of a source checkout, or ``None`` when it is not there (a wheel).

    The demo reads a method's stored ``--full`` distribution from it where running enough seeds
    would not fit the demo's time budget.
    """
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / f"{method}.md"
    return path if path.is_file() else None


def stored_rows(method: str, first_column: str, path: Optional[Path] = None) -> list[dict[str, str]]:
    """The rows of every table in ``benchmarks/results/<method>.md`` whose first header cell is ``first_column``.

    Each row is ``{header cell: cell text}`` with markdown bold removed; an empty list when the file
    (or such a table) is not there.
    """
    path = path or results_file(method)
    if path is None:
        return []
    rows: list[dict[str, str]] = []
    header: Optional[list[str]] = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None  # a table ends at the first line that is not a row
            continue
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells if cells[0] == first_column else []
        elif header and len(cells) == len(header) and not set(cells[0]) <= set("-: "):
            rows.append(dict(zip(header, cells)))
    return rows


def stored_number(text: str, index: int = 0) -> float:
    """The ``index``-th number in a results-table cell (``"−1.163 ± 0.094"`` -> -1.163, index 1 -> 0.094)."""
    import re

    found = re.findall(r"[-−]?\d+(?:\.\d+)?", text)
    if len(found) <= index:
        raise HFTrustDataError(
            f"no number {index} in the results cell {text!r}; the stored table's format changed, so the recipe "
            "reading it needs the new column layout"
        )
    return float(found[index].replace("−", "-"))


@dataclass
class Claim:
    """One row of the report's claims table: the paper's claim, what this run measured, the verdict.

    ``basis`` says what the verdict was read from: ``"3 seeds, min..max over seeds"``, ``"1 seed,
    indicative"`` or the stored ``--full`` distribution it comes from.
    """

    claim: str
    measured: str
    verdict: str
    basis: str = ""


@dataclass
class AdapterRecord:
    """An adapter folder a recipe saved, with the evidence measured on it (for ``hf-trust demo --push-to``).

    Attributes:
        path: the folder written by ``save_pretrained`` (inside the recipe's ``ctx.out_dir``).
        metrics: name -> value shown in the model card's metrics table.
        evidence: keyword arguments of :func:`hf_trust.hub_cards.evidence_report` measured in this run:
            ``bye_report``, ``forgetting`` and/or ``cot_kinetics`` (dicts, see that function).
        training_data: free-form summary of the training data for the card.
    """

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecipeResult:
    """What a recipe returns: table rows, plot files, claims, free-text notes and saved adapters."""

    rows: list[ResultRow] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    adapters: list[AdapterRecord] = field(default_factory=list)

    def add(
        self,
        setting: str,
        metric: str,
        value: float,
        std: Optional[float] = None,
        n: Optional[int] = None,
        note: str = "",
    ) -> ResultRow:
        row = ResultRow(setting, metric, float(value), None if std is None else float(std), n, note)
        self.rows.append(row)
        return row

    def add_plot(self, path: str | Path) -> None:
        self.plots.append(Path(path))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add_claim(
        self,
        claim: str,
        measured: str,
        verdict: str,
        seeds: Optional[int] = None,
        interval: str = "min..max over seeds",
        stored: str = "",
    ) -> Claim:
        """Record the paper's claim in one line, what was measured, and a verdict from :data:`VERDICTS`.

        Args:
            seeds: how many seeds of this run the verdict was read from. With fewer than
                :data:`MIN_SEEDS` the row is labelled "indicative" and "reproduced" becomes
                "not at this size": one draw cannot show that the effect clears the control.
            interval: how the verdict's interval over the seeds was formed (shown in the row).
            stored: instead of ``seeds``, the stored multi-seed distribution (a ``--full`` run or a
                sweep in ``benchmarks/results/``) the verdict was read from, naming the file and what it
                holds, for claims whose seeds do not fit the demo's time budget.
        """
        if verdict not in VERDICTS:
            raise HFTrustConfigError(f"verdict must be one of {VERDICTS}, got {verdict!r}.")
        if stored:
            basis = f"stored distribution (not this run): {stored}"
        elif seeds is None:
            basis = ""
        elif seeds >= MIN_SEEDS:
            basis = f"{seeds} seeds, {interval}"
        else:
            basis = f"{seeds} seed{'s' if seeds != 1 else ''}, indicative"
            if verdict == "reproduced":
                verdict = "not at this size"
                basis += f" (reproduced needs ≥ {MIN_SEEDS} seeds)"
        row = Claim(claim, measured, verdict, basis)
        self.claims.append(row)
        return row

    def add_adapter(
        self,
        path: str | Path,
        metrics: Optional[dict[str, Any]] = None,
        evidence: Optional[dict[str, Any]] = None,
        training_data: Optional[dict[str, Any]] = None,
        base_model: Optional[str] = None,
    ) -> AdapterRecord:
        """Record an adapter folder saved in this run, so ``hf-trust demo --push-to URL`` can publish it.

        ``evidence`` holds what this run measured about the adapter or its data, keyed like the
        arguments of :func:`hf_trust.hub_cards.evidence_report` (``bye_report``, ``forgetting``,
        ``cot_kinetics``); the card's trust report is filled from it. The folder's README.md becomes that
        card (:func:`hf_trust.hub_cards.write_adapter_card`), naming ``base_model`` (a Hub id) as the base.
        """
        record = AdapterRecord(Path(path), dict(metrics or {}), dict(evidence or {}), dict(training_data or {}))
        if (record.path / "adapter_config.json").is_file():
            from hf_trust.hub_cards import write_adapter_card

            # hf-trust's card with this run's evidence in place of PEFT's empty template; ``base_model`` is the
            # base's Hub id when the adapter config names a local folder (an offline asset's cache).
            write_adapter_card(
                record.path,
                base_model=base_model,
                metrics=record.metrics,
                evidence=record.evidence,
                training_data=record.training_data,
            )
        self.adapters.append(record)
        return record


@dataclass
class RecipeContext:
    """Handed to every recipe.

    Attributes:
        out_dir: the recipe's own folder inside the report folder (plots and artefacts go here).
        full: ``True`` for ``--full`` (the size whose figures go into ``benchmarks/RESULTS.md``).
        seeds: seeds to run; the default demo uses fewer than ``--full``.
        device: ``"cuda"`` when a GPU is visible, else ``"cpu"``.
    """

    out_dir: Path
    full: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "cpu"
    position: int = 1

    def progress(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "", **kw: Any):
        """A tqdm bar nested under the runner's bar."""
        return tqdm(iterable, total=total, desc=desc, position=self.position, leave=False, **kw)

    def savefig(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure into the recipe's folder and close it."""
        import matplotlib.pyplot as plt

        path = self.out_dir / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return path

    def log(self, message: str) -> None:
        tqdm.write(message)


@dataclass
class Recipe:
    name: str
    title: str
    run: Callable[[RecipeContext], RecipeResult]
    minutes: float = 1.0
    full_seeds: tuple[int, ...] = (0, 1, 2)
    quick_seeds: tuple[int, ...] = (0,)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(
    name: str,
    title: str,
    minutes: float = 1.0,
    full_seeds: tuple[int, ...] = (0, 1, 2),
    quick_seeds: tuple[int, ...] = (0,),
) -> Callable[[Callable[[RecipeContext], RecipeResult]], Callable[[RecipeContext], RecipeResult]]:
    """Decorator: register ``fn(ctx) -> RecipeResult`` as the demo recipe of method ``name``.

    Args:
        name: the method's short name, used by ``hf-trust demo --methods``.
        title: one line shown in the progress bar and the report.
        minutes: rough run time of the default (quick) setting on a 2-core CPU.
        full_seeds / quick_seeds: seeds used with and without ``--full``.
    """

    def decorator(fn: Callable[[RecipeContext], RecipeResult]) -> Callable[[RecipeContext], RecipeResult]:
        if name in _RECIPES and _RECIPES[name].run.__qualname__ != fn.__qualname__:
            raise HFTrustStateError(
                f"Two demo recipes are registered as {name!r} ({_RECIPES[name].run.__module__} and "
                f"{fn.__module__}); give one of them another name."
            )
        _RECIPES[name] = Recipe(name, title, fn, minutes, tuple(full_seeds), tuple(quick_seeds))
        return fn

    return decorator


def _discover() -> None:
    from . import recipes

    for info in sorted(pkgutil.iter_modules(recipes.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{recipes.__name__}.{info.name}")
        except ImportError as exc:  # an optional dependency of one recipe must not hide the others
            logger.warning("demo recipe %r is unavailable: %s", info.name, exc)


def available_recipes() -> dict[str, Recipe]:
    """All registered recipes, by name (discovers the recipe modules on first call)."""
    _discover()
    return dict(sorted(_RECIPES.items()))


def get_recipe(name: str) -> Recipe:
    recipes = available_recipes()
    if name not in recipes:
        raise HFTrustKeyError(f"no demo recipe named {name!r}; the recipes are: {', '.join(recipes)}")
    return recipes[name]
