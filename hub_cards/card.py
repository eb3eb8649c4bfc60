"""Model cards for adapters trained with hf-trust, with a "trust report" section."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, metadata_load

from hf_trust.errors import HFTrustConfigError, HFTrustFileNotFoundError

TEMPLATE_DIR = Path(__file__).parent / "templates"

#: The placeholder of the card PEFT's ``save_pretrained`` writes when it finds none; a README.md holding it
#: is PEFT's empty template, which hf-trust may replace.
PEFT_PLACEHOLDER = "[More Information Needed]"

#: The life-cycle risks a trust report covers, with the hf-trust method that checks each.
LIFECYCLE_RISKS: dict[str, str] = {
    "backdoor scan": "BYE (attention-entropy collapse filter)",
    "forgetting": "LoRASculpt (forgetting against general tasks)",
    "privacy leakage": "EPEAgent (canary leakage, data-flow ledger)",
    "reasoning confidence": "CoT-Kinetics (energy of the reasoning trace)",
}

#: "measured" is for checks that yield a number without a pass mark (e.g. a confidence score).
_STATUSES = ("passed", "flagged", "measured", "not checked")

#: Descriptions of the methods whose adapters are pushed, keyed by PEFT type name (lower case).
METHODS: dict[str, tuple[str, str]] = {
    "thanora": ("ThanoRA", "multi-task LoRA with task-specific subspaces and a subspace-preserving regularizer"),
    "lorasculpt": ("LoRASculpt", "sparse LoRA updates with a conflict-mitigation regularizer against forgetting"),
    "lora": ("LoRA", "low-rank adaptation"),
}


@dataclass
class TrustCheck:
    """The outcome of one risk check.

    Attributes:
        risk: one of :data:`LIFECYCLE_RISKS` (or a custom risk name).
        status: ``"passed"``, ``"flagged"``, ``"measured"`` (a number without a pass mark) or ``"not checked"``.
        method: how it was checked (defaults to the hf-trust method for that risk).
        summary: one sentence on what was found.
        metrics: numbers behind the finding (e.g. ``{"removed_fraction": 0.1}``).
    """

    risk: str
    status: str = "not checked"
    method: Optional[str] = None
    summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise HFTrustConfigError(f"TrustCheck.status must be one of {_STATUSES}, got {self.status!r}.")
        if self.method is None:
            self.method = LIFECYCLE_RISKS.get(self.risk)


@dataclass
class TrustReport:
    """Which life-cycle risks were checked.  Risks not given are listed as "not checked"."""

    checks: list[TrustCheck] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.checks = [TrustCheck(**c) if isinstance(c, Mapping) else c for c in self.checks]
        named = {c.risk for c in self.checks}
        self.checks += [TrustCheck(risk) for risk in LIFECYCLE_RISKS if risk not in named]

    def as_dict(self) -> dict[str, Any]:
        return {c.risk: {k: v for k, v in asdict(c).items() if k != "risk"} for c in self.checks}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> TrustReport:
        """The inverse of :meth:`as_dict` (how a card's ``hf_trust.trust_report`` metadata is read back)."""
        return cls(checks=[TrustCheck(risk, **dict(fields)) for risk, fields in data.items()])


def _adapter_info(path: Path) -> dict[str, Any]:
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise HFTrustFileNotFoundError(
            f"{path} has no adapter_config.json; pass a PEFT model or a folder written by save_pretrained."
        )
    return json.loads(cfg_file.read_text())


def read_hf_trust_card(folder: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The metadata of the hf-trust card in ``folder/README.md``, or ``None`` when there is no such card.

    A card written by :func:`render_card` carries an ``hf_trust`` metadata block (method, metrics,
    training data, trust report); any other README.md (PEFT's template, a hand-written card) gives ``None``.
    """
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    try:
        meta = metadata_load(readme)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return None  # not a card this package wrote; the caller treats it as foreign
    if not isinstance(meta, dict) or not isinstance(meta.get("hf_trust"), dict):
        return None
    return meta


def method_key(peft_type: str) -> str:
    """``"THANORA (IMPORT HF_TRUST FIRST)"`` -> ``"thanora"``."""
    return str(peft_type).split(" ")[0].lower()


def render_card(
    repo_id: str,
    *,
    method: str,
    base_model: Optional[str] = None,
    training_data: Optional[Mapping[str, Any]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    trust_report: TrustReport | Mapping | None = None,
    paper: Optional[str] = None,
    datasets: Optional[list[str]] = None,
    license: Optional[str] = None,
    template: str | os.PathLike | None = None,
    eval_results: Optional[Sequence[Any]] = None,
    legacy_model_index: bool = False,
) -> ModelCard:
    """Render the adapter card (YAML metadata + markdown) as a ``huggingface_hub.ModelCard``.

    Args:
        repo_id: the repository the card is for.
        method: the tuner's name (``"thanora"``, ``"lorasculpt"``, ``"lora"`` or any other).
        base_model: Hub id or path of the base model.
        training_data: free-form summary (name, size, tasks, ...), one bullet per key.
        metrics: name -> value, shown as a table and recorded in the card's ``tags``-free metadata.
        trust_report: a :class:`TrustReport` (or its dict form); missing risks show "not checked".
        template: a Jinja template to use instead of ``templates/adapter_card.md.j2``.
        eval_results: ``huggingface_hub.EvalResultEntry`` objects; listed in the card. They are
            uploaded as ``.eval_results/*.yaml`` by :func:`push_adapter`, the Hub's current format.
        legacy_model_index: also write them as ``model-index`` metadata, the older format some
            tools still read.
    """
    report = trust_report if isinstance(trust_report, TrustReport) else TrustReport(**(trust_report or {}))
    name, description = METHODS.get(method, (method, ""))
    entries = list(eval_results or [])
    legacy = _legacy_model_index(entries) if legacy_model_index and entries else None
    data = ModelCardData(
        library_name="peft",
        base_model=base_model,
        license=license,
        datasets=datasets,
        tags=["hf-trust", method, "peft"],
        model_name=repo_id.split("/")[-1] if legacy else None,
        eval_results=legacy,
    )
    data.hf_trust = _hf_trust_metadata(method, metrics, training_data, report)
    text = _card_template(template).render(
        card_data=data.to_yaml(),
        title=f"{name} adapter: {repo_id}",
        summary=f"A PEFT adapter trained with hf-trust's {name} on top of {base_model or 'its base model'}.",
        method_name=name,
        method_description=description,
        paper=paper,
        base_model=base_model,
        training_data=dict(training_data or {}),
        metrics=dict(metrics or {}),
        trust_checks=report.checks,
        eval_results=[
            {"dataset": e.dataset_id, "task": e.task_id, "value": e.value, "notes": e.notes or ""} for e in entries
        ],
        repo_id=repo_id,
    )
    return ModelCard(text)


def _hf_trust_metadata(
    method: str, metrics: Optional[Mapping[str, Any]], training_data: Optional[Mapping[str, Any]], report: TrustReport
) -> dict[str, Any]:
    """The card's ``hf_trust`` metadata block: what the Hub does not know but tools reading the card can use.
    The training data and trust report are kept there so a later push of the folder can carry them over."""
    return {
        "method": method,
        "metrics": dict(metrics or {}),
        "training_data": dict(training_data or {}),
        "trust_report": report.as_dict(),
    }


def _legacy_model_index(entries: Sequence[Any]) -> list[EvalResult]:
    """The evaluation results as ``model-index`` metadata, the format older tools read."""
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=e.dataset_id,
            dataset_name=e.dataset_id,
            dataset_revision=e.dataset_revision,
            metric_type=e.task_id,
            metric_value=e.value,
        )
        for e in entries
    ]


def _card_template(template: str | os.PathLike | None) -> jinja2.Template:
    """The Jinja template of the card: ``template`` or the packaged ``adapter_card.md.j2``; unknown variables
    raise instead of rendering as empty text."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(template).parent if template else TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(Path(template).name if template else "adapter_card.md.j2")
