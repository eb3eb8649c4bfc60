"""Turn what was measured (BYE report, LoRASculpt forgetting, CoT-Kinetics scores) into a card's trust report
and into evaluation results in the Hub's ``.eval_results/*.yaml`` format.

Inputs are plain mappings (or JSON files holding them) so they can come from any run:

``bye_report``
    A BYE report as written by ``BYEReport.save`` (``status``, ``num_samples``, ``suspicious`` or
    ``removed_fraction``, ``sensitive_layers``, ``warnings``). Rows flagged and removed from the
    training data mark the backdoor check "flagged"; no collapse layer or no removed row, "passed".

``forgetting``
    ``{"general_before": 0.52, "general_after": 0.50, "metric": "accuracy", "tolerance": 0.0,
    "baseline_general_after": 0.47, "target_before": 0.1, "target_after": 0.6,
    "dataset_id": "org/general-bench", "task_id": "default"}``: the score on general (held-out,
    not trained-on) tasks before and after fine-tuning; only the first two are required. Forgetting
    is ``general_before - general_after``; above ``tolerance`` the check is "flagged". With a
    ``dataset_id`` the score after fine-tuning also becomes an evaluation result.

``cot_kinetics``
    ``{"scores": [...], "correct": [0, 1, ...], "dataset_id": ..., "task_id": ...}``: CoT-Kinetics
    confidence per reasoning trace and, optionally, whether each answer was right. The check is
    "measured" (a confidence score has no pass mark); with labels the card reports the AUROC of the
    score for telling right from wrong answers, and with a ``dataset_id`` the accuracy becomes an
    evaluation result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import yaml

from hf_trust.errors import HFTrustConfigError

from ._eval_compat import EvalResultEntry, eval_result_entries_to_yaml, parse_eval_result_entries
from .card import TrustCheck, TrustReport


def load_json(path: str | Path, what: str = "evidence file") -> Any:
    """Read a JSON file; a missing or malformed file is an :class:`HFTrustConfigError` naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise HFTrustConfigError(f"{what}: {path} does not exist; pass the path of a JSON file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFTrustConfigError(f"{what}: {path} is not valid JSON ({exc}); pass the file the run wrote") from None


def load_eval_results(path: str | Path) -> list[EvalResultEntry]:
    """Read evaluation results in the ``.eval_results`` format (a YAML or JSON list of entries)."""
    path = Path(path)
    if not path.is_file():
        raise HFTrustConfigError(f"--eval-results: {path} does not exist; pass a YAML list of evaluation results")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HFTrustConfigError(f"--eval-results: {path} is not valid YAML ({exc})") from None
    return to_eval_entries(data, what=str(path))


def to_eval_entries(items: Any, what: str = "eval_results") -> list[EvalResultEntry]:
    """``EvalResultEntry`` objects from entries or their ``.eval_results`` dict form, with a clear error."""
    if items is None:
        return []
    if isinstance(items, (EvalResultEntry, Mapping)):
        items = [items]
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise HFTrustConfigError(f"{what}: expected a list of evaluation results, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, EvalResultEntry):
            out.append(item)
            continue
        try:
            out += parse_eval_result_entries([dict(item)])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HFTrustConfigError(
                f"{what}: entry {i} is not an evaluation result ({type(exc).__name__}: {exc}); each entry needs "
                "'dataset: {id: <hub dataset id>, task_id: <task>}' and 'value'"
            ) from None
    for entry in out:
        if not isinstance(entry.dataset_id, str) or not entry.dataset_id or not entry.task_id:
            raise HFTrustConfigError(f"{what}: every evaluation result needs a non-empty dataset id and task_id")
        value = entry.value
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise HFTrustConfigError(
                f"{what}: value {value!r} of {entry.dataset_id}/{entry.task_id} is not a finite number"
            )
    return out


def eval_results_yaml(entries: Sequence[EvalResultEntry]) -> str:
    """The text of one ``.eval_results/*.yaml`` file for ``entries``."""
    return yaml.safe_dump(eval_result_entries_to_yaml(list(entries)), sort_keys=False, allow_unicode=True)


def _number(data: Mapping, key: str, what: str) -> float:
    if key not in data:
        raise HFTrustConfigError(f"{what}: missing {key!r}; see hf_trust.hub_cards.evidence for the expected fields")
    try:
        value = float(data[key])
    except (TypeError, ValueError):
        raise HFTrustConfigError(f"{what}: {key!r} must be a number, got {data[key]!r}") from None
    if not math.isfinite(value):
        raise HFTrustConfigError(f"{what}: {key!r} must be finite, got {value}")
    return value


def _mapping(data: Any, what: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise HFTrustConfigError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def bye_check(report: Mapping) -> TrustCheck:
    """The "backdoor scan" row from a BYE report of the training data."""
    report = _mapping(report, "bye_report")
    n = int(_number(report, "num_samples", "bye_report"))
    if "suspicious" in report:
        removed = int(sum(bool(s) for s in report["suspicious"]))
    else:
        removed = int(round(_number(report, "removed_fraction", "bye_report") * n))
    layers = list(report.get("sensitive_layers") or [])
    status = str(report.get("status", "ok"))
    metrics: dict[str, Any] = {"rows_scored": n, "rows_removed": removed, "sensitive_layers": layers}
    if status == "no_sensitive_layers" or not layers:
        return TrustCheck(
            "backdoor scan",
            "passed",
            summary=f"no attention-entropy collapse layer in {n} training rows; nothing removed",
            metrics=metrics,
        )
    if removed == 0:
        return TrustCheck(
            "backdoor scan", "passed", summary=f"no row of {n} flagged (layers {layers})", metrics=metrics
        )
    summary = (
        f"{removed} of {n} training rows flagged as backdoor suspects and removed before training (layers {layers})"
    )
    if status in ("capped", "majority_flagged"):
        summary += f"; BYE status {status!r}: read its warnings"
    return TrustCheck("backdoor scan", "flagged", summary=summary, metrics=metrics)


def forgetting_check(data: Mapping) -> tuple[TrustCheck, list[EvalResultEntry]]:
    """The "forgetting" row (and its evaluation result when a dataset id is given)."""
    data = _mapping(data, "forgetting")
    before = _number(data, "general_before", "forgetting")
    after = _number(data, "general_after", "forgetting")
    tolerance = _number(data, "tolerance", "forgetting") if "tolerance" in data else 0.0
    metric = str(data.get("metric", "score"))
    forgot = before - after
    metrics: dict[str, Any] = {
        f"general {metric} before": before,
        f"general {metric} after": after,
        "forgetting": forgot,
    }
    summary = f"general {metric} {before:.4g} -> {after:.4g} (forgetting {forgot:+.4g}, tolerance {tolerance:g})"
    if "baseline_general_after" in data:
        base = _number(data, "baseline_general_after", "forgetting")
        metrics["plain LoRA general after"] = base
        summary += f"; plain LoRA: {base:.4g}"
    if "target_before" in data and "target_after" in data:
        t0, t1 = _number(data, "target_before", "forgetting"), _number(data, "target_after", "forgetting")
        metrics[f"target {metric} before"], metrics[f"target {metric} after"] = t0, t1
        summary += f"; target {t0:.4g} -> {t1:.4g}"
    check = TrustCheck("forgetting", "flagged" if forgot > tolerance else "passed", summary=summary, metrics=metrics)
    entries = []
    if data.get("dataset_id"):
        entries.append(
            EvalResultEntry(
                dataset_id=str(data["dataset_id"]),
                task_id=str(data.get("task_id", "default")),
                value=after,
                notes=f"hf-trust forgetting check: general {metric} after fine-tuning (before: {before:.4g})",
            )
        )
    return check, entries


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Probability that a random positive outranks a random negative (ties count one half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        raise HFTrustConfigError("cot_kinetics: AUROC needs both right and wrong answers in 'correct'")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def cot_kinetics_check(data: Mapping) -> tuple[TrustCheck, list[EvalResultEntry]]:
    """The "reasoning confidence" row from CoT-Kinetics scores (and accuracy as an evaluation result)."""
    data = _mapping(data, "cot_kinetics")
    scores = data.get("scores")
    if not isinstance(scores, Sequence) or isinstance(scores, str) or not scores:
        raise HFTrustConfigError("cot_kinetics: 'scores' must be a non-empty list of per-trace confidences")
    try:
        scores = [float(s) for s in scores]
    except (TypeError, ValueError):
        raise HFTrustConfigError("cot_kinetics: every entry of 'scores' must be a number") from None
    if not all(math.isfinite(s) for s in scores):
        raise HFTrustConfigError("cot_kinetics: 'scores' holds NaN or inf; re-run the metric on valid traces")
    n = len(scores)
    mean = sum(scores) / n
    metrics: dict[str, Any] = {"traces": n, "mean confidence": mean}
    summary = f"mean CoT-Kinetics confidence {mean:.4g} over {n} reasoning traces"
    entries = []
    correct = data.get("correct")
    if correct is not None:
        if len(correct) != n:
            raise HFTrustConfigError(
                f"cot_kinetics: {len(correct)} 'correct' labels for {n} scores; pass one per trace"
            )
        labels = [int(bool(c)) for c in correct]
        accuracy = sum(labels) / n
        metrics["accuracy"] = accuracy
        summary += f"; accuracy {accuracy:.3g}"
        if 0 < sum(labels) < n:
            metrics["AUROC (right vs wrong)"] = auroc(scores, labels)
            summary += f"; AUROC of the score for right vs wrong answers {metrics['AUROC (right vs wrong)']:.3f}"
        if data.get("dataset_id"):
            entries.append(
                EvalResultEntry(
                    dataset_id=str(data["dataset_id"]),
                    task_id=str(data.get("task_id", "default")),
                    value=accuracy,
                    notes=f"hf-trust: answer accuracy on the {n} traces scored by CoT-Kinetics",
                )
            )
    return TrustCheck("reasoning confidence", "measured", summary=summary, metrics=metrics), entries


def evidence_report(
    bye_report: Optional[Mapping] = None,
    forgetting: Optional[Mapping] = None,
    cot_kinetics: Optional[Mapping] = None,
) -> TrustReport:
    """A :class:`TrustReport` with one row per piece of evidence given; the other risks read "not checked"."""
    checks = []
    if bye_report is not None:
        checks.append(bye_check(bye_report))
    if forgetting is not None:
        checks.append(forgetting_check(forgetting)[0])
    if cot_kinetics is not None:
        checks.append(cot_kinetics_check(cot_kinetics)[0])
    return TrustReport(checks=checks)


def evidence_eval_results(
    bye_report: Optional[Mapping] = None,
    forgetting: Optional[Mapping] = None,
    cot_kinetics: Optional[Mapping] = None,
) -> list[EvalResultEntry]:
    """Evaluation results implied by the evidence (only pieces that name a Hub ``dataset_id``)."""
    del bye_report  # a data filter's report is about the data, not a score of the model
    entries = []
    if forgetting is not None:
        entries += forgetting_check(forgetting)[1]
    if cot_kinetics is not None:
        entries += cot_kinetics_check(cot_kinetics)[1]
    return entries


__all__ = [
    "auroc",
    "bye_check",
    "cot_kinetics_check",
    "eval_results_yaml",
    "evidence_eval_results",
    "evidence_report",
    "forgetting_check",
    "load_eval_results",
    "load_json",
    "to_eval_entries",
]
