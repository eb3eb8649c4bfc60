"""Push an adapter with its hf-trust card and measured evaluation results to the Hugging Face Hub
(or any Hub-compatible endpoint).

What is uploaded: the adapter files, ``README.md`` (the card, with the trust report filled from the
evidence given) and ``.eval_results/hf-trust.yaml`` (the measured scores in the Hub's current
evaluation-results format, built with ``huggingface_hub.EvalResultEntry``). The user's adapter folder
is never modified: everything is staged in a temporary copy.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import huggingface_hub
from huggingface_hub import EvalResultEntry, HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from hf_trust.atomic import atomic_write_text
from hf_trust.errors import HFTrustConfigError, HFTrustError

from .card import TrustReport, _adapter_info, method_key, render_card
from .evidence import eval_results_yaml, evidence_eval_results, evidence_report, to_eval_entries


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level error classes of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


#: Where the evaluation results go inside the repository.
EVAL_RESULTS_PATH = ".eval_results/hf-trust.yaml"


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
    **card_kwargs: Any,
):
    """Save (if needed), write the model card and evaluation results, create the repo and upload.

    Args:
        model_or_path: a ``PeftModel`` (saved with ``save_pretrained`` into a temporary folder) or
            the path of a folder written by ``save_pretrained``.
        repo_id: ``"user/name"`` of the target model repository (created if missing).
        trust_report: results of the risk checks (see :class:`hf_trust.hub_cards.card.TrustReport`).
            When omitted it is built from ``evidence``.
        training_data, metrics, base_model: shown in the card; ``base_model`` defaults to the
            adapter config's ``base_model_name_or_path``.
        evidence: what was measured, keyed like :func:`hf_trust.hub_cards.evidence.evidence_report`
            (``bye_report``, ``forgetting``, ``cot_kinetics``); fills the trust report and adds the
            evaluation results that name a Hub dataset.
        eval_results: further ``EvalResultEntry`` objects (or their ``.eval_results`` dict form).
            All results are uploaded as ``.eval_results/hf-trust.yaml``.
        legacy_model_index: also write them as ``model-index`` in the card (the older format).
        private, token, endpoint: forwarded to ``HfApi`` / ``create_repo``. Without ``token`` the
            one ``huggingface_hub`` finds is used; none at all is an :class:`HFTrustConfigError`.
        card_kwargs: further arguments of :func:`hf_trust.hub_cards.card.render_card`.

    Returns:
        The ``CommitInfo`` of the upload.
    """
    check_repo_id(repo_id)
    evidence = dict(evidence or {})
    unknown = set(evidence) - {"bye_report", "forgetting", "cot_kinetics"}
    if unknown:
        raise HFTrustConfigError(
            f"unknown evidence {sorted(unknown)}; use the keys 'bye_report', 'forgetting', 'cot_kinetics'"
        )
    if trust_report is None:
        trust_report = evidence_report(**evidence)
    entries = evidence_eval_results(**evidence) + to_eval_entries(eval_results)
    with tempfile.TemporaryDirectory(prefix="hf_trust_push_") as tmp:
        if isinstance(model_or_path, (str, Path)):
            folder = Path(model_or_path)
            if not folder.is_dir():
                raise FileNotFoundError(f"adapter folder {folder} does not exist.")
            _adapter_info(folder)  # a folder without adapter_config.json is named as the user passed it
            # The card is written next to a copy so the user's folder is never modified.
            staged = Path(tmp) / "adapter"
            staged.mkdir()
            for item in folder.iterdir():
                if item.is_file():
                    shutil.copyfile(item, staged / item.name)
            folder = staged
        elif hasattr(model_or_path, "save_pretrained") and hasattr(model_or_path, "peft_config"):
            folder = Path(tmp) / "adapter"
            model_or_path.save_pretrained(str(folder))
        else:
            raise TypeError(f"push_adapter takes a PeftModel or an adapter folder, got {type(model_or_path).__name__}.")
        info = _adapter_info(folder)
        # Checked before any network call, after the inputs: a missing token is the last thing to fix.
        token = resolve_token(token)
        card = render_card(
            repo_id,
            method=method_key(info.get("peft_type", "unknown")),
            base_model=base_model or info.get("base_model_name_or_path"),
            training_data=training_data,
            metrics=metrics,
            trust_report=trust_report,
            eval_results=entries,
            legacy_model_index=legacy_model_index,
            **card_kwargs,
        )
        atomic_write_text(folder / "README.md", str(card))
        if entries:
            atomic_write_text(folder / EVAL_RESULTS_PATH, eval_results_yaml(entries))
        api = HfApi(endpoint=endpoint, token=token)
        where = endpoint or huggingface_hub.constants.ENDPOINT
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            return api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, repo_type="model"
            )
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
