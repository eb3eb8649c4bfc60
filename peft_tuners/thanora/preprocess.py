"""``preprocess_thanora``: per-task, per-layer spectra → rank split + task-block init (before ``get_peft_model``).

Modelled on PEFT's ``preprocess_loraga``: it attaches the initial A of every target layer to the base module
(``module._peft_thanora_init``) and fills ``config.task_rank_map`` / ``task_entropy_map``; ``get_peft_model``
then builds the adapter from them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
from peft.utils.other import get_pattern_key
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from .config import ThanoRAConfig
from .layer import allocate_ranks, normalized_sv_entropy, task_block_init, uniform_ranks

INIT_ATTR = "_peft_thanora_init"


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
        raise ValueError(
            f"ThanoRA: target_modules={config.target_modules!r} matched no Linear/Conv1D layer of "
            f"{type(model).__name__}; check the module names with `[n for n, _ in model.named_modules()]`."
        )
    return found


def _in_features(module: torch.nn.Module) -> int:
    return module.weight.shape[0] if isinstance(module, Conv1D) else module.in_features


def _layer_rank(config: ThanoRAConfig, name: str) -> int:
    key = get_pattern_key((config.rank_pattern or {}).keys(), name)
    return int((config.rank_pattern or {}).get(key, config.r))


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


class _ActivationStats:
    """Streams XᵀX of every target layer's input over the first N non-padding tokens of one task.

    Memory is at most min(N, d_in)·d_in per layer, so long calibration sets and wide layers stay bounded.
    """

    def __init__(self, modules: Mapping[str, torch.nn.Module], n_tokens: int):
        self.n_tokens, self.seen = n_tokens, 0
        # Rows are kept while there are fewer than d_in of them (an N×d_in SVD is then cheaper than a d_in² eigh);
        # past that the rows fold into XᵀX, so memory never exceeds min(N, d_in)·d_in per layer.
        self.rows: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
        self.n_rows = {n: 0 for n in modules}
        self.cov: dict[str, Optional[torch.Tensor]] = {n: None for n in modules}
        self.select: Optional[torch.Tensor] = None
        self.handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, args, kwargs=None):
            x = args[0].detach()
            sel = self.select
            if sel is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(sel.shape):
                rows = x[sel]
            else:  # a layer that does not see the (batch, seq) layout: cap its rows the same way
                rows = x.reshape(-1, x.shape[-1])[: int(sel.sum()) if sel is not None else None]
            rows = rows.double().cpu()
            self.n_rows[name] += rows.shape[0]
            if self.cov[name] is None and self.n_rows[name] <= rows.shape[1]:
                self.rows[name].append(rows)
                return
            if self.cov[name] is None:
                kept = torch.cat(self.rows[name] + [rows]) if self.rows[name] else rows
                self.cov[name], self.rows[name] = kept.T @ kept, []
            else:
                self.cov[name] += rows.T @ rows

        return hook

    def set_batch(self, batch: Mapping[str, Any]) -> int:
        """Choose this batch's tokens (padding excluded, capped at N in total); returns how many."""
        ids = batch.get("input_ids")
        mask = batch.get("attention_mask")
        if mask is None:
            if ids is None:
                raise ValueError("ThanoRA calibration batches need `input_ids` or `attention_mask`.")
            mask = torch.ones(ids.shape[:2], dtype=torch.bool, device=ids.device)
        mask = mask.bool()
        left = self.n_tokens - self.seen
        keep = mask & (mask.flatten().cumsum(0).view_as(mask) <= left)
        self.select = keep
        n = int(keep.sum())
        self.seen += n
        return n

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _activation_spectra(model, modules, batches, n_tokens, device, desc):
    stats = _ActivationStats(modules, n_tokens)
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc=desc, leave=False):
                if stats.set_batch(batch) == 0:
                    break
                model(**_to_device(batch, device))
    finally:
        stats.close()
    if stats.seen == 0:
        raise ValueError(f"ThanoRA: {desc} produced no (non-padding) tokens.")
    out = {}
    for name, cov in stats.cov.items():
        if cov is None:
            x = torch.cat(stats.rows[name])
            _, sigma, vh = torch.linalg.svd(x, full_matrices=False)
            out[name] = (sigma, vh, min(x.shape))
            continue
        evals, evecs = torch.linalg.eigh(cov)
        k = min(stats.n_rows[name], cov.shape[0])
        sigma = evals.flip(0)[:k].clamp_min(0).sqrt()
        out[name] = (sigma, evecs.flip(1).T, k)  # rows = right singular vectors, descending
    return out, stats.seen


def _gradient_spectra(model, modules, batches, device, desc, r_max):
    weights = {n: m.weight for n, m in modules.items()}
    for n, w in weights.items():
        if not w.dtype.is_floating_point:
            raise ValueError(f"ThanoRA's gradient statistic needs a float weight; {n} is {w.dtype} (quantised).")
    saved = {p: p.requires_grad for p in model.parameters()}
    grads = {n: torch.zeros(w.shape, dtype=torch.float32) for n, w in weights.items()}
    n_batches = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
        for batch in tqdm(batches, desc=desc, leave=False):
            batch = _to_device(batch, device)
            if "labels" not in batch and "input_ids" in batch:
                batch["labels"] = batch["input_ids"]
            loss = model(**batch).loss
            if loss is None:
                raise ValueError(
                    "ThanoRA's gradient statistic needs batches whose forward returns a loss (add `labels`)."
                )
            loss.backward()
            for n, w in weights.items():
                grads[n] += w.grad.detach().float().cpu()
                w.grad = None
            n_batches += 1
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
    out = {}
    for n, g in grads.items():
        g = g / max(n_batches, 1)
        if isinstance(modules[n], Conv1D):  # Conv1D stores (in, out)
            g = g.T
        _, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
        out[n] = (s, vh[:r_max], min(g.shape))
    return out, n_batches


def preprocess_thanora(
    model: torch.nn.Module,
    config: ThanoRAConfig,
    task_batches: Mapping[str, Iterable[Mapping[str, Any]]],
    cache_file: Optional[str | os.PathLike] = None,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Measure every task on every target layer, split the rank budget and prepare the task-block init.

    Args:
        model: the base transformers model (before ``get_peft_model``).
        config: its :class:`ThanoRAConfig`; ``task_rank_map``/``task_entropy_map`` are filled in place.
        task_batches: ``{task name: iterable of model-input dicts}``, one entry per ``config.task_names``.
            Only used here; training later runs on the ordinary mixed dataset without task ids.
        cache_file: where to save (or, when it exists, load) the result, so repeated runs skip the statistics.
        seed: seeds the random fill-in directions (a task basis shorter than its rank).

    Returns:
        ``config.task_rank_map``.
    """
    if not isinstance(config, ThanoRAConfig):
        raise TypeError(f"preprocess_thanora needs a ThanoRAConfig, got {type(config).__name__}.")
    modules = target_modules(model, config)
    if cache_file is not None and os.path.exists(cache_file):
        saved = torch.load(cache_file, map_location="cpu", weights_only=True)
        if saved.get("task_names") != list(config.task_names) or set(saved["init"]) != set(modules):
            raise ValueError(f"ThanoRA cache {cache_file} was made for other tasks or modules; delete it to recompute.")
        _attach(config, modules, saved)
        return config.task_rank_map

    names = list(config.task_names)
    given = list(task_batches)
    if sorted(given) != sorted(names):
        raise ValueError(f"task_batches keys {sorted(given)} must equal ThanoRAConfig.task_names {sorted(names)}.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout while measuring
    r_max = max(_layer_rank(config, n) for n in modules)
    spectra: dict[str, dict] = {}
    counts = {}
    try:
        for task in tqdm(names, desc="ThanoRA statistics"):
            batches = list(task_batches[task])
            if not batches:
                raise ValueError(f"ThanoRA: task {task!r} has no calibration batches; give it at least one.")
            desc = f"task {task!r}"
            if config.allocation_statistic == "activation":
                spectra[task], counts[task] = _activation_spectra(
                    model, modules, batches, config.calib_tokens_per_task, device, desc
                )
            else:
                spectra[task], counts[task] = _gradient_spectra(model, modules, batches, device, desc, r_max)
    finally:
        model.train(was_training)
    # Only the top r_max directions can ever be used for init: drop the rest now.
    spectra = {t: {n: (s, v[:r_max], k) for n, (s, v, k) in sp.items()} for t, sp in spectra.items()}
    if config.allocation_statistic == "activation" and len(set(counts.values())) > 1:
        import warnings

        warnings.warn(
            f"ThanoRA: tasks gave different token counts {counts} (fewer than calib_tokens_per_task); entropies "
            "of tasks measured on fewer tokens are biased low. Give every task enough calibration tokens.",
            stacklevel=2,
        )

    gen = torch.Generator().manual_seed(seed)
    result = {"task_names": names, "task_rank_map": {}, "task_entropy_map": {}, "init": {}}
    for name in modules:
        r = _layer_rank(config, name)
        ent = [normalized_sv_entropy(spectra[t][name][0], spectra[t][name][2]) for t in names]
        if config.rank_allocation == "entropy":
            ranks = allocate_ranks(ent, r, config.allocation_temperature, config.min_rank_per_task)
        elif config.rank_allocation == "uniform":
            ranks = uniform_ranks(r, len(names))
        else:
            ranks = [int(x) for x in config.manual_ranks]
        bases = [spectra[t][name][1] for t in names]
        a = task_block_init(bases, ranks, config.orthogonal_init, config.init_row_norm, gen)
        result["task_rank_map"][name] = ranks
        result["task_entropy_map"][name] = [round(h, 6) for h in ent]
        result["init"][name] = a.float().contiguous()
    if cache_file is not None:
        os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
        torch.save(result, cache_file)
    _attach(config, modules, result)
    return config.task_rank_map


def _attach(config: ThanoRAConfig, modules: Mapping[str, torch.nn.Module], result: Mapping[str, Any]) -> None:
    config.task_rank_map = {k: list(v) for k, v in result["task_rank_map"].items()}
    config.task_entropy_map = {k: list(v) for k, v in result["task_entropy_map"].items()}
    for name, module in modules.items():
        setattr(module, INIT_ATTR, result["init"][name])
