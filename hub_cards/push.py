"""Push an adapter with its hf-trust card and measured evaluation results to the Hugging Face Hub
(or any Hub-compatible endpoint), or write what would be uploaded into a folder (a dry run).

What is uploaded: the adapter files, ``README.md`` (the card, with the trust report filled from the
evidence given) and ``.eval_results/hf-trust.yaml`` (the measured scores in the Hub's current
evaluation-results format, built with ``huggingface_hub.EvalResultEntry``). The user's adapter folder
is never modified: everything is staged in a temporary copy, and the copy's ``adapter_config.json``
names the base model by its Hub id.

Why the base model must be a Hub id: the Hub links an adapter to its base model through the card's
``base_model`` metadata, and ``PeftModel.from_pretrained`` loads the base named by
``base_model_name_or_path``. A folder on the uploader's disk in either place leaves a downloaded
adapter unloadable, so a local path is resolved to an id (the folder's ``config.json``
``_name_or_path``, or the base model of an hf-trust card already in the adapter folder) or refused.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import huggingface_hub
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from hf_trust.atomic import atomic_directory, atomic_write_text
from hf_trust.errors import HFTrustConfigError, HFTrustError, HFTrustFileNotFoundError, HFTrustTypeError

from ._eval_compat import HUB_HAS_EVAL_RESULTS, EvalResultEntry
from .card import PEFT_PLACEHOLDER, TrustReport, _adapter_info, method_key, read_hf_trust_card, render_card
from .evidence import eval_results_yaml, evidence_eval_results, evidence_report, to_eval_entries

logger = logging.getLogger(__name__)

#: Where the evaluation results go inside the repository.
EVAL_RESULTS_PATH = ".eval_results/hf-trust.yaml"

#: The kinds of evidence a card's trust report can be filled from (see :mod:`hf_trust.hub_cards.evidence`).
EVIDENCE_KEYS = ("bye_report", "forgetting", "cot_kinetics")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level error classes of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def check_repo_id(repo_id: Any) -> str:
    """Return ``repo_id`` if it is a valid ``"namespace/name"`` model id, else raise a clear error."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HFTrustConfigError(f"repo_id must look like 'user/name', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HFTrustConfigError(
            f"repo_id {repo_id!r} is not a valid Hub repository id ({exc}); use 'user/name' with letters, "
            "digits, '-', '_' or '.', at most 96 characters, no '--' or '..'"
        ) from None
    return repo_id


def resolve_token(token: Optional[str]) -> str:
    """The token to upload with: ``token``, else the one ``huggingface_hub`` finds (``HF_TOKEN``, stored login)."""
    found = token or huggingface_hub.get_token()
    if not found:
        raise HFTrustConfigError(
            "no Hub token: pass token=... (--token on the command line), set HF_TOKEN, or log in with `hf auth login`"
        )
    return found


def is_hub_id(name: Any) -> bool:
    """Whether ``name`` reads as a Hub model id (``"org/name"`` or a one-word canonical id) and not as a path.

    A name that exists on this machine is a path: ``from_pretrained`` would load that folder, not the Hub's.
    """
    if not isinstance(name, str) or not name or name.count("/") > 1 or "\\" in name:
        return False
    if name.startswith((".", "~", "/")) or os.path.isabs(name) or Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _config_hub_id(path: str) -> Optional[str]:
    """The ``_name_or_path`` of ``path/config.json`` when it is a Hub id (a model saved from a Hub checkpoint)."""
    config = Path(path).expanduser() / "config.json"
    try:
        name = json.loads(config.read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return name if is_hub_id(name) else None


def _refuse_local_base(value: str, source: str) -> HFTrustConfigError:
    has_config = (Path(value).expanduser() / "config.json").is_file()
    why = "its config.json has no Hub id in _name_or_path" if has_config else "it holds no config.json naming a Hub id"
    return HFTrustConfigError(
        f"base model {value!r} ({source}) is a local path and {why}: the Hub links an adapter to its base model "
        "by repo id, and a PEFT user downloading the adapter could not load a folder on your disk; pass the "
        "base model's Hub id with --base-model ORG/NAME (Python: base_model='ORG/NAME')"
    )


def resolve_base_model(base_model: Optional[str], adapter_dir: str | os.PathLike) -> tuple[Optional[str], str]:
    """The Hub id to publish as the adapter's base model, and where it was found.

    In order: ``base_model`` when given; else the adapter config's ``base_model_name_or_path`` when it
    is a Hub id; when it is a local path, the ``_name_or_path`` of that folder's ``config.json`` if that
    is a Hub id, else the base model of an hf-trust card already in ``adapter_dir``. A local path that
    resolves to no id is an :class:`HFTrustConfigError` naming ``--base-model``. An adapter that records
    no base model at all gives ``(None, ...)`` (the card says "not recorded").
    """
    if base_model is not None:
        if is_hub_id(base_model):
            return base_model, "--base-model"
        found = _config_hub_id(base_model)
        if found:
            return found, f"the _name_or_path in {Path(base_model) / 'config.json'} (--base-model names that folder)"
        raise _refuse_local_base(base_model, "given as --base-model")
    recorded = _adapter_info(Path(adapter_dir)).get("base_model_name_or_path")
    if not recorded:
        return None, "not recorded in adapter_config.json"
    if is_hub_id(recorded):
        return recorded, "adapter_config.json"
    found = _config_hub_id(recorded)
    if found:
        return found, f"the _name_or_path in {Path(recorded) / 'config.json'}; adapter_config.json names that folder"
    card = read_hf_trust_card(adapter_dir) or {}
    if is_hub_id(card.get("base_model")):
        return card["base_model"], "the hf-trust card in the adapter folder; adapter_config.json names a local folder"
    raise _refuse_local_base(recorded, "from adapter_config.json")


def _checked_evidence(evidence: Optional[Mapping[str, Mapping]]) -> dict[str, Mapping]:
    evidence = dict(evidence or {})
    unknown = set(evidence) - set(EVIDENCE_KEYS)
    if unknown:
        raise HFTrustConfigError(
            f"unknown evidence {sorted(unknown)}; use the keys 'bye_report', 'forgetting', 'cot_kinetics'"
        )
    return evidence


def _checked_dry_run_dir(dry_run_dir: str | os.PathLike) -> Path:
    out = Path(dry_run_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HFTrustConfigError(
            f"dry_run_dir {str(out)!r} (--out) is not an empty folder; a dry run never overwrites files, "
            "pass a new or empty folder"
        )
    return out


def _stage_adapter(model_or_path: Any, staged: Path) -> Path:
    """Copy the adapter folder (or save the ``PeftModel``) into ``staged``, the folder that is uploaded.

    Only the folder's own files are copied, never its subfolders (other adapters, checkpoints); the card
    and the rewritten config are then written into the copy, so the user's folder is never modified.
    """
    if isinstance(model_or_path, (str, Path)):
        folder = Path(model_or_path)
        if not folder.is_dir():
            raise HFTrustFileNotFoundError(
                f"adapter folder {folder} does not exist; pass a folder written by save_pretrained or a PeftModel."
            )
        _adapter_info(folder)  # a folder without adapter_config.json is named as the user passed it
        staged.mkdir()
        for item in folder.iterdir():
            if item.is_file():
                shutil.copyfile(item, staged / item.name)
    elif hasattr(model_or_path, "save_pretrained") and hasattr(model_or_path, "peft_config"):
        model_or_path.save_pretrained(str(staged))
    else:
        raise HFTrustTypeError(
            f"push_adapter takes a PeftModel or an adapter folder, got {type(model_or_path).__name__}."
        )
    return staged


def _name_base_model(staged: Path, base_model: Optional[str]) -> None:
    """Point the staged ``adapter_config.json`` at the base model's Hub id (left byte for byte when it already does)."""
    config_file = staged / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if base_model is None or config.get("base_model_name_or_path") == base_model:
        return
    config["base_model_name_or_path"] = base_model
    # PEFT's own layout of the file (indent 2, sorted keys), so the copy differs from its source in that one field.
    atomic_write_text(config_file, json.dumps(config, indent=2, sort_keys=True))


def _upload(folder: Path, repo_id: str, *, token: str, endpoint: Optional[str], private: bool, message: str):
    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or huggingface_hub.constants.ENDPOINT
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message, repo_type="model")
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        if status in (401, 403):
            raise HFTrustConfigError(
                f"{where} refused the token (HTTP {status}) for {repo_id}; pass a token with write access "
                "to that namespace"
            ) from None
        raise HFTrustError(f"upload of {repo_id} to {where} failed: {exc}") from exc
    except _transport_errors() as exc:  # connection refused, DNS: name the endpoint, not HTTP internals
        raise HFTrustError(f"cannot reach the Hub at {where} ({exc}); check the endpoint and the network") from exc


def push_adapter(
    model_or_path: Any,
    repo_id: str,
    *,
    trust_report: TrustReport | Mapping | None = None,
    training_data: Optional[Mapping[str, Any]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    base_model: Optional[str] = None,
    evidence: Optional[Mapping[str, Mapping]] = None,
    eval_results: Optional[Sequence[EvalResultEntry | Mapping]] = None,
    legacy_model_index: bool = False,
    private: bool = False,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
    commit_message: str = "Upload adapter with hf-trust card",
    dry_run_dir: str | os.PathLike | None = None,
    **card_kwargs: Any,
) -> CommitInfo | Path:
    """Save (if needed), write the model card and evaluation results, create the repo and upload.

    Args:
        model_or_path: a ``PeftModel`` (saved with ``save_pretrained`` into a temporary folder) or
            the path of a folder written by ``save_pretrained``.
        repo_id: ``"user/name"`` of the target model repository (created if missing).
        trust_report: results of the risk checks (see :class:`hf_trust.hub_cards.card.TrustReport`).
            When omitted it is built from ``evidence``, or taken from the hf-trust card already in the
            folder (the one :func:`write_adapter_card` wrote) when no evidence is given either.
        training_data, metrics: shown in the card; when omitted, those of an hf-trust card already in
            the folder are kept.
        base_model: the base model's Hub id, written into the card and into the uploaded copy of
            ``adapter_config.json``. Defaults to the adapter config's ``base_model_name_or_path``; a
            local path there is resolved or refused as :func:`resolve_base_model` describes.
        evidence: what was measured, keyed like :func:`hf_trust.hub_cards.evidence.evidence_report`
            (``bye_report``, ``forgetting``, ``cot_kinetics``); fills the trust report and adds the
            evaluation results that name a Hub dataset.
        eval_results: further ``EvalResultEntry`` objects (or their ``.eval_results`` dict form).
            All results are uploaded as ``.eval_results/hf-trust.yaml``.
        legacy_model_index: also write them as ``model-index`` in the card (the older format).
        private, token, endpoint: forwarded to ``HfApi`` / ``create_repo``. Without ``token`` the
            one ``huggingface_hub`` finds is used; none at all is an :class:`HFTrustConfigError`.
        dry_run_dir: upload nothing; write the exact files that would be uploaded into this folder
            (new or empty) instead. No token is needed.
        card_kwargs: further arguments of :func:`hf_trust.hub_cards.card.render_card`.

    Returns:
        The ``CommitInfo`` of the upload, or the dry-run folder.
    """
    check_repo_id(repo_id)
    evidence = _checked_evidence(evidence)
    dry_run = None if dry_run_dir is None else _checked_dry_run_dir(dry_run_dir)
    entries = evidence_eval_results(**evidence) + to_eval_entries(eval_results)
    legacy_model_index = _hub_lacks_eval_results(entries) or legacy_model_index
    with tempfile.TemporaryDirectory(prefix="hf_trust_push_") as tmp:
        folder = _stage_adapter(model_or_path, Path(tmp) / "adapter")
        base_model, source = resolve_base_model(base_model, folder)
        logger.info("base model of %s: %s (%s)", repo_id, base_model, source)
        # Checked before any network call, after the inputs: a missing token is the last thing to fix.
        token = None if dry_run else resolve_token(token)
        card = render_card(
            repo_id,
            method=method_key(_adapter_info(folder).get("peft_type", "unknown")),
            base_model=base_model,
            eval_results=entries,
            legacy_model_index=legacy_model_index,
            **_card_evidence(folder, evidence, trust_report, training_data, metrics),
            **card_kwargs,
        )
        _write_card_files(folder, card, base_model, entries)
        if dry_run is not None:
            with atomic_directory(dry_run) as out:  # the dry-run folder appears whole or not at all
                shutil.copytree(folder, out, dirs_exist_ok=True)
            return dry_run
        return _upload(folder, repo_id, token=token, endpoint=endpoint, private=private, message=commit_message)


def _hub_lacks_eval_results(entries: Sequence[EvalResultEntry]) -> bool:
    """Whether the installed huggingface_hub (< 1) cannot write ``.eval_results``, so ``entries`` must go into
    the card's model-index, the format it knows (logged as a warning)."""
    if not entries or HUB_HAS_EVAL_RESULTS:
        return False
    logger.warning(
        "huggingface_hub %s predates the Hub's .eval_results format (EvalResultEntry): the %d evaluation "
        "result(s) are written as the card's model-index instead; upgrade huggingface_hub to 1.x or newer "
        "for .eval_results",
        huggingface_hub.__version__,
        len(entries),
    )
    return True


def _card_evidence(
    folder: Path,
    evidence: Mapping[str, Mapping],
    trust_report: TrustReport | Mapping | None,
    training_data: Optional[Mapping[str, Any]],
    metrics: Optional[Mapping[str, Any]],
) -> dict[str, Any]:
    """The trust report, training data and metrics of the pushed card: those given; else the trust report built
    from ``evidence``; else those of the hf-trust card already in ``folder`` (written by write_adapter_card)."""
    stored = (read_hf_trust_card(folder) or {}).get("hf_trust", {})
    if trust_report is None:
        if evidence or not stored.get("trust_report"):
            trust_report = evidence_report(**evidence)
        else:
            trust_report = TrustReport.from_dict(stored["trust_report"])
    return {
        "trust_report": trust_report,
        "training_data": training_data if training_data is not None else stored.get("training_data"),
        "metrics": metrics if metrics is not None else stored.get("metrics"),
    }


def _write_card_files(folder: Path, card: Any, base_model: Optional[str], entries: Sequence[EvalResultEntry]) -> None:
    """Into the staged copy: the base model's Hub id in adapter_config.json, the card, the evaluation results."""
    _name_base_model(folder, base_model)
    atomic_write_text(folder / "README.md", str(card))
    if entries and HUB_HAS_EVAL_RESULTS:
        atomic_write_text(folder / EVAL_RESULTS_PATH, eval_results_yaml(entries))


def write_adapter_card(
    folder: str | os.PathLike,
    *,
    base_model: Optional[str] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    training_data: Optional[Mapping[str, Any]] = None,
    evidence: Optional[Mapping[str, Mapping]] = None,
    trust_report: TrustReport | Mapping | None = None,
    repo_id: Optional[str] = None,
    overwrite: bool = False,
    **card_kwargs: Any,
) -> Path:
    """Write the hf-trust card (trust report, measured numbers) as ``folder/README.md`` of a saved adapter.

    It replaces the empty template PEFT's ``save_pretrained`` writes; a later :func:`push_adapter` of the
    folder keeps its trust report, metrics and training data, and takes its base model when the adapter
    config names a local folder. Any other README.md is left alone unless ``overwrite=True``.

    Args:
        folder: a folder written by ``save_pretrained``.
        base_model: the base model's Hub id (a local path is resolved or refused as in
            :func:`resolve_base_model`); defaults to the adapter config's, left out when that is a path
            without a Hub id (the card then says "not recorded" and :func:`push_adapter` asks for it).
        metrics, training_data, evidence, trust_report, card_kwargs: as in :func:`push_adapter`.
        repo_id: the repository named in the card's title and usage snippet (default
            ``"<your-namespace>/<folder name>"``, a placeholder until it is pushed).
        overwrite: replace a README.md that is neither PEFT's template nor an hf-trust card.

    Returns:
        The path of the card.
    """
    folder = Path(folder)
    info = _adapter_info(folder)
    readme = folder / "README.md"
    if readme.is_file() and not overwrite and read_hf_trust_card(folder) is None:
        if PEFT_PLACEHOLDER not in readme.read_text(encoding="utf-8", errors="replace"):
            raise HFTrustConfigError(
                f"{readme} is a card hf-trust did not write (neither PEFT's template nor an hf-trust card); "
                "pass overwrite=True to replace it, or move it away first"
            )
    if base_model is not None:
        base_model = resolve_base_model(base_model, folder)[0]
    else:
        recorded = info.get("base_model_name_or_path")
        base_model = recorded if is_hub_id(recorded) else _config_hub_id(recorded) if recorded else None
    evidence = _checked_evidence(evidence)
    if trust_report is None:
        trust_report = evidence_report(**evidence)
    card = render_card(
        repo_id or f"<your-namespace>/{folder.resolve().name}",
        method=method_key(info.get("peft_type", "unknown")),
        base_model=base_model,
        training_data=training_data,
        metrics=metrics,
        trust_report=trust_report,
        eval_results=evidence_eval_results(**evidence),
        **card_kwargs,
    )
    return atomic_write_text(readme, str(card))
