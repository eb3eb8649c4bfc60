"""``preprocess_thanora``: per-task, per-layer statistics → rank split + task-block init (before ``get_peft_model``).

Modelled on PEFT's ``preprocess_loraga``: it attaches the initial task rows of A of every target layer to the
base module (``module._peft_thanora_init``) and fills ``config.task_rank_map`` / ``task_entropy_map``;
``get_peft_model`` then builds the adapter from them.

Each task is read once, as a stream of batches capped at ``preview_samples_per_task`` examples; every
statistic is accumulated on the fly (a d_in × d_in matrix per layer, whatever the preview size) and reduced
to its top directions as soon as the task is done, so peak memory is one task's covariances.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
from peft.utils.other import get_pattern_key
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from hf_trust.atomic import atomic_save
from hf_trust.errors import HFTrustCacheError, HFTrustConfigError, HFTrustDataError
from hf_trust.fingerprint import arrays_sha256, config_fingerprint, json_sha256, model_identity

from .._lora_family import LoraFamilyConfig
from .config import ThanoRAConfig
from .layer import (
    allocate_ranks,
    covariance_basis,
    normalized_sv_entropy,
    softmax_allocation,
    task_block_init,
    uniform_ranks,
)

INIT_ATTR = "_peft_thanora_init"
#: Version of the cache file layout and its digests; a file of another version is recomputed.
CACHE_FORMAT = 3

#: The LoRA fields preprocessing reads: the rank budget of each layer.  The target modules enter the key as the
#: list of modules they select (``target_modules`` itself is a set, whose order is not stable across processes);
#: every other LoRA field acts at injection or training only.
_LORA_FIELDS_READ = ("r", "rank_pattern")
#: ThanoRA fields preprocessing does not read: the regulariser's (training only) and the ones it fills in (its
#: output).  ``allocation_temperature`` enters as the temperature actually used (``None`` = the rule's default).
_THANORA_FIELDS_NOT_READ = (
    "subspace_lambda",
    "subspace_factors",
    "normalize_B",
    "intra_lambda",
    "regularize_B",
    "task_rank_map",
    "task_entropy_map",
    "allocation_recorded",
    "allocation_temperature",
)


def target_modules(model: torch.nn.Module, config: ThanoRAConfig) -> dict[str, torch.nn.Module]:
    """The linear modules of ``model`` that ``config`` targets, by module name (as PEFT names them)."""
    cfg = _maybe_include_all_linear_layers(copy.copy(config), model)
    found = {}
    for name, module in model.named_modules():
        if not name or not isinstance(module, (torch.nn.Linear, Conv1D)):
            continue
        hit = check_target_module_exists(cfg, name)
        if hit and type(hit).__name__ != "_ExcludedModule":
            found[name] = module
    if not found:
        raise HFTrustConfigError(
            f"ThanoRAConfig.target_modules={config.target_modules!r} matched no Linear/Conv1D layer of "
            f"{type(model).__name__}; check the module names with `[n for n, _ in model.named_modules()]`."
        )
    return found


def _weight(module: torch.nn.Module) -> torch.Tensor:
    """W as (d_out × d_in) whatever the layer type (Conv1D stores it transposed)."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def _layer_rank(config: ThanoRAConfig, name: str) -> int:
    key = get_pattern_key((config.rank_pattern or {}).keys(), name)
    return int((config.rank_pattern or {}).get(key, config.r))


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------------- the preview stream
def _batch_size(batch: Mapping[str, Any]) -> int:
    for key in ("input_ids", "attention_mask"):
        if torch.is_tensor(batch.get(key)):
            return int(batch[key].shape[0])
    for v in batch.values():
        if torch.is_tensor(v) and v.dim() > 0:
            return int(v.shape[0])
    raise HFTrustDataError("ThanoRA calibration batches must be dicts of tensors with a batch dimension.")


def _preview(batches: Iterable[Mapping[str, Any]], n_samples: int) -> Iterator[dict[str, Any]]:
    """Yield batches until ``n_samples`` examples were given; the last one is cut to fit exactly."""
    left = n_samples
    for batch in batches:
        if left <= 0:
            return
        if not isinstance(batch, Mapping):
            raise HFTrustDataError(
                f"ThanoRA calibration batches must be dicts of model inputs, got {type(batch).__name__}."
            )
        n = _batch_size(batch)
        if n > left:
            batch = {
                k: v[:left] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n else v for k, v in batch.items()
            }
            n = left
        left -= n
        yield dict(batch)


def _batches_digest(batches: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of a stream of input dicts: per batch, its keys, its tensors (bytes) and its other values (repr)."""
    parts = []
    for batch in batches:
        keys = sorted(batch)
        tensors = [batch[k] for k in keys if torch.is_tensor(batch[k])]
        others = {k: repr(batch[k]) for k in keys if not torch.is_tensor(batch[k])}
        parts.append([keys, arrays_sha256(*tensors), others])
    return json_sha256(parts)


def settings_fingerprint(config: ThanoRAConfig, modules: Mapping[str, torch.nn.Module], seed: int) -> str:
    """SHA-256 of every config field that changes what preprocessing produces, the target modules and the seed.

    Every ThanoRA field counts unless :data:`_THANORA_FIELDS_NOT_READ` names it, so a field added later is part
    of the key without anyone listing it; of the LoRA fields only :data:`_LORA_FIELDS_READ` count.
    """
    lora_fields = {f.name for f in dataclasses.fields(LoraFamilyConfig)} - set(_LORA_FIELDS_READ)
    return config_fingerprint(
        config,
        exclude=(*sorted(lora_fields), *_THANORA_FIELDS_NOT_READ),
        format=CACHE_FORMAT,
        temperature=config.temperature,
        modules=sorted(modules),
        seed=int(seed),
    )


# ---------------------------------------------------------------------- input checks
_FIX_FINITE = (
    "drop or repair those examples before preprocess_thanora (e.g. keep rows where torch.isfinite(x).all(-1)); "
    "in half precision, run preprocessing in float32"
)


def _check_finite_inputs(batch: Mapping[str, Any], desc: str, index: int) -> None:
    """Refuse NaN/inf in a calibration batch up front: they would reach the statistics' eigensolver as a
    cryptic convergence failure (or, for the entropy, a silently wrong allocation)."""
    for key, v in batch.items():
        if torch.is_tensor(v) and v.is_floating_point() and v.numel():
            bad = int((~torch.isfinite(v)).sum())
            if bad:
                raise HFTrustDataError(
                    f"ThanoRA: {desc}, calibration batch {index}: input `{key}` holds {bad} NaN/inf value(s) of "
                    f"{v.numel()}; {_FIX_FINITE}."
                )


def _forward(model, batch: Mapping[str, Any], desc: str, index: int):
    """``model(**batch)``, a shape error turned into a data error naming the task and batch."""
    try:
        return model(**batch)
    except (RuntimeError, IndexError) as exc:
        shapes = {k: tuple(v.shape) for k, v in batch.items() if torch.is_tensor(v)}
        raise HFTrustDataError(
            f"ThanoRA: {desc}, calibration batch {index} (input shapes {shapes}) fails in the model's forward: "
            f"{type(exc).__name__}: {exc}. Calibration batches must be model inputs of the same format as "
            "the training batches (same feature width, token ids below the vocabulary size)."
        ) from exc


def _check_layer_input(name: str, module: torch.nn.Module, x: torch.Tensor, desc: str) -> None:
    """Width and finiteness of a target layer's input (the first place a bad batch becomes visible)."""
    d_in = _weight(module).shape[1]
    if x.shape[-1] != d_in:
        raise HFTrustDataError(
            f"ThanoRA: {desc}: layer {name} takes inputs of width {d_in}, its calibration input has width "
            f"{x.shape[-1]} (shape {tuple(x.shape)}). Calibration batches must be model inputs of the same format "
            "as the training batches."
        )
    if not bool(torch.isfinite(x).all()):
        raise HFTrustDataError(
            f"ThanoRA: {desc}: the input of layer {name} holds NaN/inf values (the model overflowed on this task's "
            f"calibration data or its inputs are not finite); {_FIX_FINITE}."
        )


# ---------------------------------------------------------------------- activation statistics
class _ActivationStats:
    """Forward pre-hooks that stream two statistics of every target layer's input over one task:

    * for the entropy, the first N = ``n_tokens`` non-padding tokens (rows are kept while fewer than d_in, an
      N×d_in SVD being cheaper than a d_in² eigh; past that they fold into XᵀX);
    * for the covariance init, XᵀX over every non-padding token of the preview (and the token count).

    Memory is at most two d_in × d_in matrices per layer, however long the preview.
    """

    def __init__(
        self, modules: Mapping[str, torch.nn.Module], n_tokens: int, entropy: bool, covariance: bool, desc: str = ""
    ):
        self.n_tokens, self.seen, self.total, self.desc = n_tokens, 0, 0, desc
        self.want_entropy, self.want_cov = entropy, covariance
        self.rows: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
        self.n_rows = {n: 0 for n in modules}
        self.gram: dict[str, Optional[torch.Tensor]] = {n: None for n in modules}
        self.cov: dict[str, Optional[torch.Tensor]] = {n: None for n in modules}
        self.cov_rows = {n: 0 for n in modules}
        self.capped: Optional[torch.Tensor] = None
        self.valid: Optional[torch.Tensor] = None
        self.handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in modules.items()]

    def _select(self, x: torch.Tensor, sel: Optional[torch.Tensor]) -> torch.Tensor:
        if sel is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(sel.shape):
            return x[sel]
        # a layer that does not see the (batch, seq) layout: cap its rows the same way
        return x.reshape(-1, x.shape[-1])[: int(sel.sum()) if sel is not None else None]

    def _hook(self, name: str):
        def hook(module, args, kwargs=None):
            x = args[0].detach()
            _check_layer_input(name, module, x, self.desc)
            if self.want_entropy and self.capped is not None and bool(self.capped.any()):
                rows = self._select(x, self.capped).double().cpu()
                self.n_rows[name] += rows.shape[0]
                if self.gram[name] is None and self.n_rows[name] <= rows.shape[1]:
                    self.rows[name].append(rows)
                elif self.gram[name] is None:
                    kept = torch.cat(self.rows[name] + [rows]) if self.rows[name] else rows
                    self.gram[name], self.rows[name] = kept.T @ kept, []
                else:
                    self.gram[name] += rows.T @ rows
            if self.want_cov:
                rows = self._select(x, self.valid).double().cpu()
                self.cov_rows[name] += rows.shape[0]
                part = rows.T @ rows
                self.cov[name] = part if self.cov[name] is None else self.cov[name] + part

        return hook

    def set_batch(self, batch: Mapping[str, Any]) -> None:
        """Choose this batch's tokens: non-padding ones for the covariance, the first N of them for the entropy."""
        ids = batch.get("input_ids")
        mask = batch.get("attention_mask")
        if mask is None:
            if ids is None:
                raise HFTrustDataError("ThanoRA calibration batches need `input_ids` or `attention_mask`.")
            mask = torch.ones(ids.shape[:2], dtype=torch.bool, device=ids.device)
        mask = mask.bool()
        left = self.n_tokens - self.seen
        self.capped = mask & (mask.flatten().cumsum(0).view_as(mask) <= left)
        self.valid = mask
        self.seen += int(self.capped.sum())
        self.total += int(mask.sum())

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def entropy_spectra(self, r_max: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
        """module → (σ, top right singular vectors as rows, k) of the first-N-token activation matrix."""
        out = {}
        for name, gram in self.gram.items():
            if gram is None:
                if not self.rows[name]:
                    continue
                x = torch.cat(self.rows[name])
                _, sigma, vh = torch.linalg.svd(x, full_matrices=False)
                out[name] = (sigma, vh[:r_max], min(x.shape))
                continue
            evals, evecs = torch.linalg.eigh(gram)
            k = min(self.n_rows[name], gram.shape[0])
            sigma = evals.flip(0)[:k].clamp_min(0).sqrt()
            out[name] = (sigma, evecs.flip(1).T[:r_max], k)  # rows = right singular vectors, descending
        return out


def _activation_pass(model, modules, batches, config, device, desc, entropy: bool, covariance: bool):
    stats = _ActivationStats(modules, config.calib_tokens_per_task, entropy, covariance, desc)
    n_batches = 0
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc=desc, leave=False):
                _check_finite_inputs(batch, desc, n_batches)
                stats.set_batch(batch)
                _forward(model, _to_device(batch, device), desc, n_batches)
                n_batches += 1
    finally:
        stats.close()
    if n_batches == 0:
        raise HFTrustDataError(f"ThanoRA: {desc} has no calibration batches; give every task at least one.")
    if stats.total == 0:
        raise HFTrustDataError(f"ThanoRA: {desc} produced no (non-padding) tokens.")
    return stats


def _gradient_spectra(model, modules, batches, device, desc, r_max):
    weights = {n: m.weight for n, m in modules.items()}
    for n, w in weights.items():
        if not w.dtype.is_floating_point:
            raise HFTrustConfigError(
                f"ThanoRAConfig.allocation_statistic='gradient' needs float weights; {n} is {w.dtype} (quantised). "
                "Use allocation_statistic='activation'."
            )
    saved = {p: p.requires_grad for p in model.parameters()}
    grads = {n: torch.zeros(w.shape, dtype=torch.float32) for n, w in weights.items()}
    n_batches = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
        for batch in tqdm(batches, desc=desc, leave=False):
            _check_finite_inputs(batch, desc, n_batches)
            batch = _to_device(batch, device)
            if "labels" not in batch and "input_ids" in batch:
                batch["labels"] = batch["input_ids"]
            loss = getattr(_forward(model, batch, desc, n_batches), "loss", None)
            if loss is None:
                raise HFTrustDataError(
                    "ThanoRA's gradient statistic needs batches whose forward returns a loss (add `labels`)."
                )
            if not bool(torch.isfinite(loss)):
                raise HFTrustDataError(
                    f"ThanoRA: {desc}, calibration batch {n_batches}: the loss is {float(loss)} (the gradient "
                    f"statistic needs a finite loss); {_FIX_FINITE}."
                )
            loss.backward()
            for n, w in weights.items():
                grads[n] += w.grad.detach().float().cpu()
                w.grad = None
            n_batches += 1
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
    if n_batches == 0:
        raise HFTrustDataError(f"ThanoRA: {desc} has no calibration batches; give every task at least one.")
    out = {}
    for n, g in grads.items():
        g = g / n_batches
        if isinstance(modules[n], Conv1D):  # Conv1D stores (in, out)
            g = g.T
        _, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
        out[n] = (s, vh[:r_max], min(g.shape))
    return out


def _task_statistics(model, modules, batches, config, device, task, r_max):
    """(entropy spectra, init bases) of one task: module → (σ, V_top, k) and module → V_top (rows)."""
    desc = f"task {task!r}"
    want_cov = config.task_init == "covariance"
    use_act = config.allocation_statistic == "activation"
    spectra, bases, count = {}, {}, None
    if config.allocation_statistic == "gradient":
        # The gradient pass needs the batches a second time when the covariance init also reads them.
        batches = list(batches) if want_cov else batches
        spectra = _gradient_spectra(model, modules, batches, device, desc, r_max)
    if use_act or want_cov:
        stats = _activation_pass(model, modules, batches, config, device, desc, entropy=use_act, covariance=want_cov)
        if use_act:
            spectra, count = stats.entropy_spectra(r_max), stats.seen
        if want_cov:
            for name, module in modules.items():
                cov = stats.cov[name] / max(stats.cov_rows[name], 1)
                bases[name] = covariance_basis(_weight(module), cov, r_max)[0]
                stats.cov[name] = None  # free as we go
    if config.task_init == "spectrum":
        bases = {n: v for n, (_, v, _) in spectra.items()}
    return spectra, bases, count


def _allocate(config: ThanoRAConfig, entropies: list[float], budget: int) -> list[int]:
    if config.rank_allocation == "softmax":
        return softmax_allocation(
            entropies, budget, config.temperature, config.allocation_scale, config.min_rank_per_task
        )
    if config.rank_allocation == "entropy":
        return allocate_ranks(entropies, budget, config.temperature, config.min_rank_per_task)
    if config.rank_allocation == "uniform":
        return uniform_ranks(budget, len(entropies))
    return [int(x) for x in config.manual_ranks]


# ---------------------------------------------------------------------- cache
def _payload_digest(payload: Mapping[str, Any]) -> str:
    names = sorted(payload["init"])
    init = arrays_sha256(*(payload["init"][n] for n in names))
    return json_sha256([payload["task_rank_map"], payload["task_entropy_map"], names, init])


def _read_cache(path: str, keys: Mapping[str, Optional[str]], config: ThanoRAConfig, modules) -> tuple[Any, str]:
    """(payload, "") when the cache is valid for ``keys``; (None, reason) when it is absent, corrupt or stale."""
    if not os.path.exists(path):
        return None, "absent"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        payload = saved["payload"]
        ok = (
            saved.get("format") == CACHE_FORMAT
            and saved.get("digest") == _payload_digest(payload)
            and set(payload["task_rank_map"]) == set(modules)
        )
    except Exception as exc:  # truncated zip, pickling error, missing keys: all mean "unreadable"
        return None, f"corrupt ({type(exc).__name__}: {exc})"
    if not ok:
        return None, "corrupt (format, checksum or module list does not match its contents)"
    for field in ("settings", "model", "data"):
        want = keys.get(field)
        if want is not None and saved.get(field) != want:
            return None, f"stale (made for other {'config settings' if field == 'settings' else field})"
    for name, ranks in payload["task_rank_map"].items():
        a = payload["init"].get(name)
        budget = config.task_budget(_layer_rank(config, name))
        if len(ranks) != len(config.task_names) or sum(ranks) != budget:
            return None, f"stale (task ranks of {name} do not fit this config)"
        if a is not None and tuple(a.shape) != (budget, _weight(modules[name]).shape[1]):
            return None, f"stale (init of {name} has shape {tuple(a.shape)})"
    return payload, ""


# ---------------------------------------------------------------------- entry point
def preprocess_thanora(
    model: torch.nn.Module,
    config: ThanoRAConfig,
    task_batches: Mapping[str, Iterable[Mapping[str, Any]]],
    cache_file: Optional[str | os.PathLike] = None,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Measure every task on every target layer, split the rank budget and prepare the task-block init.

    Args:
        model (`torch.nn.Module`): the base transformers model (before ``get_peft_model``); not modified except
            for the init tensors it attaches to the target modules (removed again by ``get_peft_model``).
        config (`ThanoRAConfig`): filled in place: ``task_rank_map``, ``task_entropy_map``,
            ``allocation_recorded``.
        task_batches (`Mapping[str, Iterable[dict]]`): ``{task name: iterable of model-input dicts}``, one entry
            per ``config.task_names``; read once each, up to ``config.preview_samples_per_task`` examples.  Only
            used here; training later runs on the ordinary mixed dataset without task ids.  May be empty when
            ``cache_file`` holds a result for this config and model.
        cache_file (`str | os.PathLike`, *optional*): where to keep the result.  Its key covers every config field
            that changes the result, the seed, a fingerprint of the target weights and (when ``task_batches`` are
            given) of the preview data; it is verified on read (checksum, shapes) and recomputed when stale or
            corrupt, and written atomically.
        seed (`int`, defaults to `0`): seeds the random fill-in directions (a task basis shorter than its rank).

    Returns:
        ``config.task_rank_map``: module name → task ranks (summing to r − cooperative rank).
    """
    if not isinstance(config, ThanoRAConfig):
        raise HFTrustConfigError(f"preprocess_thanora needs a ThanoRAConfig, got {type(config).__name__}.")
    modules = target_modules(model, config)
    previews = _previews(config, task_batches)
    if cache_file is not None:
        cache_file = os.fspath(cache_file)
        keys = _cache_keys(model, config, modules, previews, seed)
        payload = _cached_payload(cache_file, keys, config, modules, can_recompute=bool(previews))
        if payload is not None:
            _attach(config, modules, payload)
            return config.task_rank_map
    elif not previews:
        raise HFTrustConfigError("preprocess_thanora needs task_batches (one entry per task) or a valid cache_file.")

    payload = _compute(model, config, modules, previews, seed)
    if cache_file is not None:
        obj = {**keys, "format": CACHE_FORMAT, "payload": payload, "digest": _payload_digest(payload)}
        atomic_save(cache_file, lambda p: torch.save(obj, p))
    _attach(config, modules, payload)
    return config.task_rank_map


def _previews(config: ThanoRAConfig, task_batches: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, Iterable]:
    """Task name → the source of its preview batches (empty when no ``task_batches`` were given)."""
    names = list(config.task_names)
    given = list(task_batches or {})
    if given and sorted(given) != sorted(names):
        raise HFTrustConfigError(
            f"task_batches keys {sorted(given)} must equal ThanoRAConfig.task_names {sorted(names)}."
        )
    previews: dict[str, Iterable] = {}
    for t in names if given else ():
        src = task_batches[t]
        # A one-shot iterator is read into memory (at most the preview); a re-iterable source is read twice
        # (fingerprint, then statistics) instead, so it is never held whole.
        previews[t] = list(_preview(src, config.preview_samples_per_task)) if iter(src) is src else src
    return previews


def _cache_keys(model, config: ThanoRAConfig, modules, previews: Mapping[str, Iterable], seed: int) -> dict:
    """What a cache file must have been made for: these settings, these target weights, this preview data."""
    data = None
    if previews:
        n = config.preview_samples_per_task
        data = json_sha256([_batches_digest(_preview(previews[t], n)) for t in config.task_names])
    return {
        "settings": settings_fingerprint(config, modules, seed),
        # the class, the config and the target weights: the only weights preprocessing reads
        "model": model_identity(model, tensors={n: m.weight for n, m in modules.items()}),
        "data": data,
    }


def _cached_payload(path: str, keys: Mapping, config: ThanoRAConfig, modules, can_recompute: bool):
    """The cache's payload when it is valid for ``keys``; else ``None`` (with a warning when a stale or corrupt
    file is about to be recomputed), or an error when there is no data to recompute it from."""
    payload, reason = _read_cache(path, keys, config, modules)
    if payload is not None:
        return payload
    if not can_recompute:
        raise HFTrustCacheError(
            f"ThanoRA cache {path} is {reason} for this config and model, and no task_batches were given "
            "to recompute it; pass the calibration batches."
        )
    if reason != "absent":
        warnings.warn(f"ThanoRA cache {path} is {reason}; recomputing it.", stacklevel=4)
    return None


def _compute(model, config: ThanoRAConfig, modules, previews, seed: int) -> dict[str, Any]:
    names = list(config.task_names)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout while measuring
    r_max = max(_layer_rank(config, n) for n in modules)
    spectra: dict[str, dict] = {}
    bases: dict[str, dict] = {}
    counts = {}
    try:
        for task in tqdm(names, desc="ThanoRA statistics"):
            batches = _preview(previews[task], config.preview_samples_per_task)
            spectra[task], bases[task], counts[task] = _task_statistics(
                model, modules, batches, config, device, task, r_max
            )
    finally:
        model.train(was_training)
    if config.allocation_statistic == "activation" and len(set(counts.values())) > 1:
        warnings.warn(
            f"ThanoRA: tasks gave different token counts {counts} (fewer than calib_tokens_per_task); entropies "
            "of tasks measured on fewer tokens are biased low. Give every task enough calibration tokens.",
            stacklevel=3,
        )
    gen = torch.Generator().manual_seed(seed)
    payload: dict[str, Any] = {"task_rank_map": {}, "task_entropy_map": {}, "init": {}}
    for name in modules:
        r = _layer_rank(config, name)
        budget = config.task_budget(r)
        ent = [normalized_sv_entropy(spectra[t][name][0], spectra[t][name][2]) for t in names]
        ranks = _allocate(config, ent, budget)
        payload["task_rank_map"][name] = ranks
        payload["task_entropy_map"][name] = [round(h, 6) for h in ent]
        if config.task_init != "random":
            a = task_block_init(
                [bases[t][name] for t in names], ranks, config.orthogonal_init, config.init_row_norm, gen
            )
            payload["init"][name] = a.float().contiguous()
    return payload


def _attach(config: ThanoRAConfig, modules: Mapping[str, torch.nn.Module], payload: Mapping[str, Any]) -> None:
    config.task_rank_map = {k: list(v) for k, v in payload["task_rank_map"].items()}
    config.task_entropy_map = {k: list(v) for k, v in payload["task_entropy_map"].items()}
    config.allocation_recorded = True
    for name, module in modules.items():
        if name in payload["init"]:
            setattr(module, INIT_ATTR, payload["init"][name])
        elif hasattr(module, INIT_ATTR):
            delattr(module, INIT_ATTR)
