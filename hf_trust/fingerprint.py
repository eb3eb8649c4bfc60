"""The one fingerprint helper: every cache key and checkpoint manifest of hf-trust is built from these.

Three kinds of identity, each a hex SHA-256:

* :func:`config_fingerprint`: the fields of a dataclass config (or any JSON-able mapping), so that a cache
  written for other settings is never read back;
* :func:`model_identity`: a model (class, config, weights) and optionally its tokenizer or processor
  (vocabulary, chat template, special tokens); ``exact=True`` hashes every byte, ``exact=False`` a cheap
  digest (per tensor: name, shape, dtype, sum, sum of squares and a strided sample) for models too large to
  read twice;
* :func:`file_sha256` / :func:`arrays_sha256` / :func:`json_sha256`: files, arrays and plain values.

A base-layer module: it imports only :mod:`hf_trust.errors` from the package; torch and numpy are imported when used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from .errors import HFTrustTypeError

_CHUNK = 1 << 20


def json_sha256(value: Any) -> str:
    """SHA-256 of ``value`` as canonical JSON (sorted keys; non-JSON values by ``str``)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (large weight files never sit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def arrays_sha256(*arrays: Any) -> str:
    """SHA-256 of numpy arrays or torch tensors: dtype, shape and bytes of each, in order."""
    import numpy as np

    digest = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):  # a torch tensor
            a = a.detach().cpu().contiguous()
            digest.update(f"torch|{a.dtype}|{tuple(a.shape)}|".encode())
            if a.numel():
                import torch

                # reshape first: a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
                digest.update(a.reshape(-1).view(torch.uint8).numpy().tobytes())
            continue
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return digest.hexdigest()


def config_fingerprint(config: Any, *, exclude: Iterable[str] = (), **extra: Any) -> str:
    """SHA-256 of a config's fields (a dataclass or a mapping), minus ``exclude``, plus ``extra`` values.

    Every field counts unless excluded by name, so a field added later to the config is part of the key
    without anyone remembering to list it (a hand-written list of fields drifts).
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif isinstance(config, Mapping):
        fields = dict(config)
    else:
        raise HFTrustTypeError(
            f"config_fingerprint takes a dataclass instance or a mapping, not {type(config).__name__}"
        )
    for name in exclude:
        fields.pop(name, None)
    fields.update(extra)
    return json_sha256({"__class__": type(config).__qualname__, **fields})


def tokenizer_identity(processor: Any) -> str:
    """SHA-256 of what shapes a prompt: processor class and name, vocabulary, chat template, special tokens and
    (for a multimodal processor) the image processor's settings."""
    h = hashlib.sha256()
    tok = getattr(processor, "tokenizer", processor)
    h.update(type(processor).__qualname__.encode())
    h.update(str(getattr(tok, "name_or_path", "")).encode())
    with contextlib.suppress(Exception):
        h.update(json.dumps(tok.get_vocab(), sort_keys=True).encode())
    template = getattr(processor, "chat_template", None) or getattr(tok, "chat_template", None)
    h.update(json.dumps(template, sort_keys=True, default=str).encode())
    h.update(json.dumps(getattr(tok, "special_tokens_map", {}), sort_keys=True, default=str).encode())
    for attr in ("image_processor", "patch_size", "num_additional_image_tokens", "vision_feature_select_strategy"):
        obj = getattr(processor, attr, None)
        text = obj.to_json_string() if hasattr(obj, "to_json_string") else repr(obj)
        h.update(f"{attr}={text}".encode())
    return h.hexdigest()


def _tensor_digest(h: Any, name: str, t: Any, exact: bool) -> None:
    import numpy as np
    import torch

    t = t.detach()
    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
    if not t.numel():
        return
    if exact:
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool):
        flat = t.reshape(-1).double()
        h.update(np.array([flat.sum().item(), (flat * flat).sum().item()]).tobytes())
        step = max(1, flat.numel() // 64)
        h.update(flat[::step][:64].cpu().numpy().tobytes())


def model_identity(
    model: Any,
    tokenizer: Any = None,
    *,
    exact: bool = True,
    tensors: Optional[Mapping[str, Any]] = None,
) -> str:
    """SHA-256 of a model: its class, its ``config`` (every field), its tensors and optionally its tokenizer.

    Args:
        model: a ``torch.nn.Module`` (a PEFT model's adapters are part of its state dict, hence of the identity).
        tokenizer: a tokenizer or processor whose :func:`tokenizer_identity` joins the digest.
        exact: hash every tensor byte (``True``) or a cheap per-tensor digest (``False``: name, shape, dtype,
            sum, sum of squares and 64 strided values), enough to tell checkpoints apart without reading a
            multi-GB model twice. Readers that verify what they load on read may use the cheap form.
        tensors: hash these named tensors instead of the whole state dict (e.g. only the weights a method reads).
    """
    import torch

    h = hashlib.sha256(type(model).__qualname__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_json_string"):
        with contextlib.suppress(Exception):
            h.update(cfg.to_json_string(use_diff=False).encode())
    named = tensors if tensors is not None else model.state_dict()
    with torch.no_grad():
        for name in sorted(named):
            _tensor_digest(h, name, named[name], exact)
    if tokenizer is not None:
        h.update(tokenizer_identity(tokenizer).encode())
    return h.hexdigest()


def callable_identity(fn: Callable[..., Any]) -> Optional[str]:
    """SHA-256 of everything a callable computes with, or ``None`` when it cannot be identified.

    Combines ``datasets``' content hash of the callable (dill: closures, bound ``self``, defaults) with the
    bytecode of its function, so two lambdas never collide and an edited function gets a new key. Callables
    that cannot be pickled (holding a lock, a CUDA stream) return ``None``: their results are never cached.
    """
    from datasets.fingerprint import Hasher

    h = hashlib.sha256()
    try:
        h.update(Hasher.hash(fn).encode())
    except Exception:  # dill could not serialise it: unidentifiable
        return None
    func = getattr(fn, "__func__", fn)
    code = getattr(func, "__code__", None)
    if code is None:  # a callable object: the code of its class's __call__
        code = getattr(getattr(type(fn), "__call__", None), "__code__", None)  # noqa: B004
    if code is not None:
        _code_digest(code, h)
    h.update(f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', type(fn).__qualname__)}".encode())
    return h.hexdigest()


def _code_digest(code: Any, h: Any) -> None:
    # Bytecode, constants (nested functions recursively) and names: an edit to the body changes the key.
    h.update(code.co_code)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _code_digest(const, h)
        else:
            h.update(repr(const).encode())
    h.update(repr(code.co_names).encode())


__all__ = [
    "arrays_sha256",
    "callable_identity",
    "config_fingerprint",
    "file_sha256",
    "json_sha256",
    "model_identity",
    "tokenizer_identity",
]
