"""Federated checkpoints, shared by both engines: a ``checkpoint-N`` folder is complete once its
``checkpoint.json`` manifest (the SHA-256 of every file) exists, and only complete ones are resumed from,
counted or pruned.

Why a manifest written last: a run killed while checkpointing leaves a folder that looks whole but holds a
truncated file; without the manifest it would be resumed from, and with ``save_total_limit`` it would count
as one of the kept checkpoints and let a good one be deleted.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import torch

from hf_trust.atomic import atomic_write_json
from hf_trust.errors import HFTrustCacheError
from hf_trust.fingerprint import file_sha256

logger = logging.getLogger("hf_trust.trainers.federated")

CHECKPOINT_MARKER = "checkpoint.json"
_NAME = re.compile(r"checkpoint-(\d+)")


def checkpoint_dir(output_dir: str | Path, round_number: int) -> Path:
    """``output_dir/checkpoint-<round_number>`` (1-based round, as the history's ``round`` column)."""
    return Path(output_dir) / f"checkpoint-{round_number}"


def begin_checkpoint(path: str | Path) -> Path:
    """Create ``path`` and make it incomplete before any file changes (overwriting an older one in place)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CHECKPOINT_MARKER).unlink(missing_ok=True)
    return path


def finish_checkpoint(path: str | Path, round_number: int, world: int, files: Iterable[str]) -> None:
    """Write the manifest: the checkpoint is complete from here on."""
    path = Path(path)
    atomic_write_json(
        path / CHECKPOINT_MARKER,
        {"round": int(round_number), "world": int(world), "sha256": {f: file_sha256(path / f) for f in files}},
    )


def torch_load(path: Path) -> Any:
    """``torch.load`` of a checkpoint file, naming the file when it is truncated or foreign."""
    try:
        return torch.load(path, weights_only=False)
    except Exception as exc:  # truncated or foreign file: name it instead of a pickle traceback
        raise HFTrustCacheError(
            f"cannot read {path} ({type(exc).__name__}: {exc}); the file is truncated or not a federated "
            f"checkpoint file. Resume from an earlier checkpoint-N folder (see latest_checkpoint)."
        ) from exc


def read_json(path: str | Path) -> Any:
    """Read a JSON file hf-trust wrote (``history.json``, ``partition.json``, markers), naming the file
    when it is truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFTrustCacheError(f"{path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFTrustCacheError(
            f"{path} is truncated or not JSON ({exc}); it was cut off mid-write by an older version or "
            f"edited by hand. Delete it and re-run the step that writes it."
        ) from exc


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check that ``path`` is a complete, unmodified federated checkpoint; return its ``checkpoint.json``.

    Raises :class:`~hf_trust.errors.HFTrustCacheError` naming the file when the folder is not a
    checkpoint, was interrupted while being written, or a file no longer matches its recorded SHA-256.
    """
    path = Path(path)
    marker = path / CHECKPOINT_MARKER
    if not (path / "server.pt").is_file() and not marker.is_file():
        raise HFTrustCacheError(f"{path} is not a federated checkpoint (no server.pt); pass a checkpoint-N folder.")
    if not marker.is_file():
        raise HFTrustCacheError(
            f"{path} is incomplete (no {CHECKPOINT_MARKER}): the run stopped while writing it. Resume from "
            f"an earlier checkpoint-N folder (latest_checkpoint(output_dir) finds the last complete one)."
        )
    meta = read_json(marker)
    if not isinstance(meta, dict) or not {"round", "world", "sha256"} <= set(meta):
        raise HFTrustCacheError(f"{marker} lacks round/world/sha256; it was not written by save_checkpoint.")
    for name, expected in meta["sha256"].items():
        file = path / name
        if not file.is_file():
            raise HFTrustCacheError(f"{file} is missing from the checkpoint; resume from an earlier checkpoint-N.")
        if file_sha256(file) != expected:
            raise HFTrustCacheError(
                f"{file} does not match the SHA-256 recorded in {marker} (the file was truncated or changed "
                f"after the checkpoint was written); resume from an earlier checkpoint-N."
            )
    return meta


def _numbered(output_dir: str | Path) -> list[tuple[int, Path]]:
    found = []
    for child in Path(output_dir).glob("checkpoint-*"):
        m = _NAME.fullmatch(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return sorted(found)


def complete_checkpoints(output_dir: str | Path, warn: bool = False) -> list[Path]:
    """The complete checkpoints of ``output_dir``, oldest round first (interrupted or corrupt ones left out)."""
    out = []
    for _, child in _numbered(output_dir):
        try:
            verify_checkpoint(child)
        except HFTrustCacheError as exc:
            if warn:
                logger.warning("skipping %s: %s", child, exc)
            continue
        out.append(child)
    return out


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The complete checkpoint of ``output_dir`` with the highest round, or ``None``.

    Interrupted or corrupt ``checkpoint-N`` folders are skipped with a warning, so a run killed while
    checkpointing resumes from the last checkpoint that was written in full.
    """
    for _, child in reversed(_numbered(output_dir)):
        try:
            verify_checkpoint(child)
        except HFTrustCacheError as exc:
            logger.warning("skipping %s: %s", child, exc)
            continue
        return child
    return None


def prune_checkpoints(output_dir: str | Path, save_total_limit: Optional[int]) -> list[Path]:
    """Keep the ``save_total_limit`` newest complete checkpoints of ``output_dir``; delete the older complete ones.

    ``transformers.Trainer``'s ``save_total_limit``: ``None`` keeps every checkpoint.  An incomplete checkpoint
    never counts towards the limit and is never deleted here (it may be the one being resumed from after a
    crash's repair, and deleting it cannot make a complete one safer).  Returns the deleted folders.
    """
    if save_total_limit is None:
        return []
    complete = complete_checkpoints(output_dir)
    doomed = complete[: max(0, len(complete) - int(save_total_limit))]
    for folder in doomed:
        # unmark first: a deletion cut short leaves an incomplete folder, never a "complete" partial one
        (folder / CHECKPOINT_MARKER).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    return doomed
