"""Push an adapter with its hf-trust card to the Hugging Face Hub (or any Hub-compatible endpoint)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from huggingface_hub import HfApi

from .card import TrustReport, _adapter_info, method_key, render_card


def push_adapter(
    model_or_path: Any,
    repo_id: str,
    *,
    trust_report: TrustReport | Mapping | None = None,
    training_data: Optional[Mapping[str, Any]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    base_model: Optional[str] = None,
    private: bool = False,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
    commit_message: str = "Upload adapter with hf-trust card",
    **card_kwargs: Any,
):
    """Save (if needed), write the model card, create the repo and upload the adapter folder.

    Args:
        model_or_path: a ``PeftModel`` (saved with ``save_pretrained`` into a temporary folder) or
            the path of a folder written by ``save_pretrained``.
        repo_id: ``"user/name"`` of the target model repository (created if missing).
        trust_report: results of the risk checks (see :class:`hf_trust.hub_cards.card.TrustReport`).
        training_data, metrics, base_model: shown in the card; ``base_model`` defaults to the
            adapter config's ``base_model_name_or_path``.
        private, token, endpoint: forwarded to ``HfApi`` / ``create_repo``.
        card_kwargs: further arguments of :func:`hf_trust.hub_cards.card.render_card`.

    Returns:
        The ``CommitInfo`` of the upload.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}.")
    with tempfile.TemporaryDirectory(prefix="hf_trust_push_") as tmp:
        if isinstance(model_or_path, (str, Path)):
            folder = Path(model_or_path)
            if not folder.is_dir():
                raise FileNotFoundError(f"adapter folder {folder} does not exist.")
            # The card is written next to a copy so the user's folder is never modified.
            staged = Path(tmp) / "adapter"
            staged.mkdir()
            for item in folder.iterdir():
                if item.is_file():
                    (staged / item.name).write_bytes(item.read_bytes())
            folder = staged
        elif hasattr(model_or_path, "save_pretrained") and hasattr(model_or_path, "peft_config"):
            folder = Path(tmp) / "adapter"
            model_or_path.save_pretrained(str(folder))
        else:
            raise TypeError(f"push_adapter takes a PeftModel or an adapter folder, got {type(model_or_path).__name__}.")
        info = _adapter_info(folder)
        card = render_card(
            repo_id,
            method=method_key(info.get("peft_type", "unknown")),
            base_model=base_model or info.get("base_model_name_or_path"),
            training_data=training_data,
            metrics=metrics,
            trust_report=trust_report,
            **card_kwargs,
        )
        card.save(str(folder / "README.md"))
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, repo_type="model"
        )
