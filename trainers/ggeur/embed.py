"""Frozen-encoder embeddings cached as a ``datasets.Dataset`` (spec b.1, d)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustTypeError
from hf_trust.fingerprint import json_sha256

Encoder = Union[torch.nn.Module, Callable[[Any], torch.Tensor]]


def _features(encoder: Encoder, batch: Any) -> torch.Tensor:
    """Image features from a transformers vision model or a callable.

    ``CLIPModel.get_image_features`` returns a ``BaseModelOutputWithPooling`` in transformers 5.x, so the
    pooled tensor is taken from ``.pooler_output``; a plain vision encoder's ``pooler_output`` likewise.
    """
    if hasattr(encoder, "get_image_features"):
        out = encoder.get_image_features(pixel_values=batch)
    elif isinstance(encoder, torch.nn.Module) and hasattr(encoder, "config"):
        out = encoder(pixel_values=batch)
    else:
        out = encoder(batch)
    if hasattr(out, "pooler_output") and out.pooler_output is not None:
        out = out.pooler_output
    elif hasattr(out, "image_embeds"):
        out = out.image_embeds
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise HFTrustTypeError(
            "the encoder must return (batch, dim) features or an output with .pooler_output; got "
            f"{type(out).__name__} of shape {getattr(out, 'shape', None)}."
        )
    return out


def embed_dataset(
    encoder: Encoder,
    dataset: Dataset,
    batch_size: int = 256,
    image_column: str = "image",
    preprocess: Optional[Callable[[list], torch.Tensor]] = None,
    keep_columns: Optional[list[str]] = None,
    fingerprint: Optional[str] = None,
    device: Optional[str] = None,
    normalize: bool = False,
) -> Dataset:
    """Embed ``dataset[image_column]`` with a frozen encoder → ``Dataset(embedding, <kept columns>)``.

    Args:
        encoder: a transformers vision model (``CLIPModel`` uses ``get_image_features``) or any callable
            mapping a preprocessed batch to ``(batch, dim)`` features.
        preprocess: maps a list of images to the encoder's input tensor (e.g. a ``CLIPImageProcessor``
            wrapper).  Default: the column is already numeric and is stacked as a float tensor.
        keep_columns: columns copied next to the embedding (default: every column but the images).
        fingerprint: the cache fingerprint of the result.  The encoder is never hashed (models are large and
            not deterministic to pickle); by default the fingerprint combines the input dataset's fingerprint
            and the encoder's class name and parameter count.
        normalize: L2-normalise the embeddings.  The official code does **not**; whatever you choose, real,
            synthetic and test rows must be treated alike (mixing the two collapsed a port to ~2 %).
    """
    if len(dataset) == 0:
        raise HFTrustDataError("the dataset is empty; nothing to embed (pass a dataset with at least one row).")
    if image_column not in dataset.column_names:
        raise HFTrustConfigError(
            f"column {image_column!r} not found; the dataset has {dataset.column_names}: pass image_column=<one of them>."
        )
    keep = keep_columns if keep_columns is not None else [c for c in dataset.column_names if c != image_column]
    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
        device = device or next(encoder.parameters()).device.type
    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(dataset), batch_size), desc="embedding", leave=False):
            images = dataset[start : start + batch_size][image_column]
            batch = preprocess(images) if preprocess else torch.as_tensor(np.asarray(images), dtype=torch.float32)
            if device:
                batch = batch.to(device)
            feats = _features(encoder, batch).float()
            if normalize:
                feats = torch.nn.functional.normalize(feats, dim=-1)
            chunks.append(feats.cpu().numpy())
    emb = np.concatenate(chunks)
    data = {"embedding": list(emb)}
    for col in keep:
        data[col] = dataset[col]
    out = Dataset.from_dict(data).with_format("numpy", columns=["embedding"], output_all_columns=True)
    out._fingerprint = fingerprint or _default_fingerprint(dataset, encoder, normalize, image_column)
    return out


def _default_fingerprint(dataset: Dataset, encoder: Encoder, normalize: bool, image_column: str) -> str:
    """The input's fingerprint, the encoder's class name and parameter count, and the settings that change rows."""
    n_params = sum(p.numel() for p in encoder.parameters()) if isinstance(encoder, torch.nn.Module) else 0
    key = {
        "dataset": dataset._fingerprint,
        "encoder": type(encoder).__name__,
        "n_params": n_params,
        "normalize": normalize,
        "image_column": image_column,
    }
    return json_sha256(key)[:16]
