"""BYE ("Believe Your Eyes", arXiv 2505.16916): attention-entropy backdoor-sample filtering.

The method, as in the official code (``bye.py`` + ``model_vqa.py --get-entropy``, spec section b):

1. prompt = first user turn (image + question) with the generation prefix; the answer is never fed;
2. a_l = head-mean attention of the last prompt position to the N_v image tokens, per decoder layer l;
3. p_l = a_l / Σ a_l  (renormalised over image tokens);  H_l = −Σ p_l · ln(p_l + ε), in fp32;
4. per layer, a 2-GMM on {H_l(i)}; layer l is *sensitive* iff |μ₁−μ₂| > k_σ·(σ₁+σ₂)  (k_σ = 2);
5. s_i = mean of H_l(i) over sensitive layers; a 2-GMM on s; the low-mean component is suspicious;
6. no sensitive layer → nothing removed (``status="no_sensitive_layers"``; the reference crashes here).

Everything after step 3 is :func:`bye_select` on a plain (N, L) array; :class:`BYEFilter` is the
``datasets`` adapter (batched ``map`` with an explicit fingerprint) around it.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch

from hf_trust.errors import HFTrustError

from .capture import capture_rows, check_eager, image_token_id, unwrap_model
from .gmm import fit_gmm_1d, gaussian_kl
from .report import BYEReport

BYE_VERSION = "1"
ENTROPY_COLUMN = "bye_layer_entropy"
SCORE_COLUMN = "bye_score"
SUSPICIOUS_COLUMN = "bye_suspicious"


# ------------------------------------------------------------------ step 3: entropy over image tokens
def image_attention_entropy(
    rows: torch.Tensor, image_mask: torch.Tensor, eps: float = 1e-8, normalize_by_log_nv: bool = False
) -> torch.Tensor:
    """Entropy of the attention a query pays to the image tokens, renormalised over those tokens.

    Args:
        rows: (B, T) head-averaged attention of the query position (any dtype; computed in fp32).
        image_mask: (B, T) bool, True at image-token positions.
        eps: added inside the log only, as the reference does.
        normalize_by_log_nv: divide by ln N_v (our extension, for a varying number of image tokens).

    Returns:
        (B,) entropies in [0, ln N_v] (or [0, 1] when normalised).
    """
    a = rows.float() * image_mask.float()
    p = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    h = -(p * torch.log(p + eps) * image_mask.float()).sum(dim=-1)
    if normalize_by_log_nv:
        h = h / torch.log(image_mask.sum(dim=-1).float().clamp_min(2))
    return h


# ------------------------------------------------------------------ steps 4-6: selection on (N, L)
def _auroc(score: np.ndarray, y: np.ndarray) -> float:
    """AUROC of ``score`` for positives ``y`` (rank statistic, ties averaged)."""
    pos, neg = score[y], score[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    r = np.arange(1, len(order) + 1, dtype=float)
    # average ranks of ties
    uniq, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    ranks[order] = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _select_layers(
    gmms, bimodal: list[bool], kl: list[float], layer_select: str | Sequence[int], require_minor_low: bool
) -> list[int]:
    if isinstance(layer_select, str) and layer_select == "bimodal":
        chosen = [l for l, b in enumerate(bimodal) if b]
    elif isinstance(layer_select, str) and layer_select.startswith("top_kl:"):
        k = int(layer_select.split(":", 1)[1])
        chosen = sorted(np.argsort(-np.nan_to_num(np.asarray(kl), nan=-np.inf))[:k].tolist())
    elif not isinstance(layer_select, str):
        chosen = sorted(int(l) for l in layer_select)
        if any(l < 0 or l >= len(gmms) for l in chosen):
            raise ValueError(f"layer_select {chosen} is outside the {len(gmms)} decoder layers.")
    else:
        raise ValueError(f"layer_select must be 'bimodal', 'top_kl:<k>' or a list of layers, got {layer_select!r}.")
    if require_minor_low:
        chosen = [l for l in chosen if gmms[l].weights[0] < 0.5]
    return chosen


def bye_select(
    entropies: np.ndarray | Sequence[Sequence[float]],
    *,
    k_sigma: float = 2.0,
    layer_select: str | Sequence[int] = "bimodal",
    require_minor_low_component: bool = False,
    max_removal_fraction: Optional[float] = None,
    warn_if_removal_concentrated: Optional[float] = None,
    labels: Optional[Sequence[Any]] = None,
    is_poison: Optional[Sequence[bool]] = None,
    direction: str = "low",
) -> tuple[BYEReport, np.ndarray]:
    """BYE's unsupervised selection on an (N, L) entropy matrix.  Returns ``(report, scores)``.

    Defaults reproduce the reference exactly; the other switches are the spec's opt-in safeguards:
    ``layer_select="top_kl:k"`` (k layers with the largest KL diagnostic), ``require_minor_low_component``
    (a sensitive layer's low component must weigh < 0.5), ``max_removal_fraction`` (keep at most this
    share flagged, the lowest scores first) and ``warn_if_removal_concentrated`` (warn when at least this
    share of one label's rows is removed). ``labels`` feed the removal histogram, ``is_poison`` the
    per-layer AUROC — neither is used for the decision.
    """
    if direction != "low":
        raise ValueError("direction is fixed to 'low' (attention collapse lowers entropy), as in the paper.")
    E = np.asarray(entropies, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] == 0:
        raise HFTrustError(
            f"BYE needs an (N, L) entropy matrix with N ≥ 1 rows, got shape {E.shape}; is the dataset empty?"
        )
    n, L = E.shape
    # NaN → column mean (reference behaviour; NaN arises when a row has no attention on image tokens)
    col_mean = np.nanmean(np.where(np.isnan(E), np.nan, E), axis=0) if np.isnan(E).any() else None
    if col_mean is not None:
        E = np.where(np.isnan(E), np.nan_to_num(col_mean)[None, :], E)
    params = {
        "k_sigma": k_sigma,
        "layer_select": layer_select if isinstance(layer_select, str) else list(layer_select),
        "require_minor_low_component": require_minor_low_component,
        "max_removal_fraction": max_removal_fraction,
        "warn_if_removal_concentrated": warn_if_removal_concentrated,
        "direction": direction,
    }
    report = BYEReport(status="ok", num_samples=n, num_layers=L, params=params)
    if n < 2:
        report.status = "no_sensitive_layers"
        report.suspicious = [False] * n
        return report, np.full(n, np.nan)

    gmms = [fit_gmm_1d(E[:, l]) for l in range(L)]
    for g in gmms:
        mu, sd = g.means, g.stds
        report.layer_gmms.append(g.to_dict())
        report.layer_bimodal.append(bool(abs(mu[1] - mu[0]) > k_sigma * (sd[0] + sd[1])))
        report.layer_kl.append(gaussian_kl(mu[0], sd[0], mu[1], sd[1]))
    if is_poison is not None:
        y = np.asarray(is_poison, dtype=bool)
        report.layer_auroc = [_auroc(-E[:, l], y) for l in range(L)]
    report.sensitive_layers = _select_layers(
        gmms, report.layer_bimodal, report.layer_kl, layer_select, require_minor_low_component
    )
    if labels is not None:
        report.label_histogram = {str(k): v for k, v in Counter(map(str, labels)).items()}
    if not report.sensitive_layers:
        report.status = "no_sensitive_layers"
        report.suspicious = [False] * n
        return report, np.full(n, np.nan)

    scores = E[:, report.sensitive_layers].mean(axis=1)
    sg = fit_gmm_1d(scores)
    report.score_gmm = sg.to_dict()
    flagged = sg.predict(scores) == 0  # low-mean component = collapsed attention = suspicious
    if max_removal_fraction is not None and flagged.sum() > max_removal_fraction * n:
        cap = int(math.floor(max_removal_fraction * n))
        keep_flag = np.argsort(scores, kind="stable")[:cap]
        flagged = np.zeros(n, dtype=bool)
        flagged[keep_flag] = True
        report.status = "capped"
    report.suspicious = flagged.tolist()
    report.removed_fraction = float(flagged.mean())
    if labels is not None:
        lab = np.asarray(list(map(str, labels)))
        report.removal_histogram = {str(k): v for k, v in Counter(lab[flagged].tolist()).items()}
        if warn_if_removal_concentrated is not None:
            for k, removed in report.removal_histogram.items():
                share = removed / report.label_histogram[k]
                if share >= warn_if_removal_concentrated and removed >= 5:
                    msg = (
                        f"BYE removed {removed}/{report.label_histogram[k]} rows with label {k!r}: unless {k!r} "
                        "is an attack target, the split may follow the classes rather than a trigger."
                    )
                    report.warnings.append(msg)
                    warnings.warn(msg, stacklevel=2)
    return report, scores


# ------------------------------------------------------------------ the datasets adapter
class BYEFilter:
    """BYE as a ``datasets`` transform: ``clean_ds, report = BYEFilter(model, processor)(ds)``.

    Args:
        model: a fine-tuned LLaVA-style VLM (``config.image_token_id``; eager attention in the language model),
            optionally wrapped by PEFT.
        processor: an HF multimodal processor; the prompt is rendered with its chat template
            (``[image, question]`` user turn, ``add_generation_prompt=True``). Not needed with ``collate_fn``.
        collate_fn: alternative to ``processor``: ``(images, questions) -> dict`` of model inputs (it must
            render the same prompt the model was fine-tuned with and insert the image tokens).
        image_column / question_column: dataset columns holding the image and the question.
        label_column: column for the removal histogram (``"answer"`` or ``"label"`` when present).
        poison_column: optional ground-truth column (bool) used only for the report's per-layer AUROC.
        batch_size: rows per forward pass.
        k_sigma: bimodality threshold in |μ₁−μ₂| > k_σ(σ₁+σ₂)  (reference: 2.0).
        eps: inside the log of the entropy (reference: 1e-8).
        layers: ``"all"`` or a list of decoder layers to profile.
        head_reduce: ``"mean"`` over all heads (reference).
        query: ``"last_prompt_token"`` (reference; the position predicting the first answer token).
        layer_select, require_minor_low_component, max_removal_fraction, warn_if_removal_concentrated:
            opt-in safeguards (default OFF = reference behaviour), see :func:`bye_select`.
        normalize_by_log_nv: divide entropies by ln N_v (for models with per-image token counts).
        direction: fixed to ``"low"``.
        fingerprint: identifies the weights in the ``datasets`` cache key; by default a cheap digest of the
            parameters (never a pickle of the model).
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        collate_fn: Optional[Callable] = None,
        image_column: str = "image",
        question_column: str = "question",
        label_column: Optional[str] = None,
        poison_column: Optional[str] = None,
        batch_size: int = 8,
        k_sigma: float = 2.0,
        eps: float = 1e-8,
        layers: str | Sequence[int] = "all",
        head_reduce: str = "mean",
        query: str = "last_prompt_token",
        layer_select: str | Sequence[int] = "bimodal",
        require_minor_low_component: bool = False,
        max_removal_fraction: Optional[float] = None,
        warn_if_removal_concentrated: Optional[float] = None,
        normalize_by_log_nv: bool = False,
        direction: str = "low",
        fingerprint: Optional[str] = None,
    ):
        if processor is None and collate_fn is None:
            raise HFTrustError(
                "BYEFilter needs a `processor` (HF multimodal processor with a chat template) or a "
                "`collate_fn(images, questions) -> model inputs`."
            )
        if query != "last_prompt_token":
            raise ValueError("query must be 'last_prompt_token' (the reference's query position).")
        if head_reduce != "mean":
            raise ValueError("head_reduce must be 'mean' (average over all heads, as in the reference).")
        if direction != "low":
            raise ValueError("direction is fixed to 'low', as in the paper.")
        self.model = model
        self.base = unwrap_model(model)
        check_eager(self.base)
        self.image_token_id = image_token_id(self.base)
        self.processor, self.collate_fn = processor, collate_fn
        self.image_column, self.question_column = image_column, question_column
        self.label_column, self.poison_column = label_column, poison_column
        self.batch_size, self.eps, self.layers = batch_size, eps, layers
        self.normalize_by_log_nv = normalize_by_log_nv
        self.select_kwargs = dict(
            k_sigma=k_sigma,
            layer_select=layer_select,
            require_minor_low_component=require_minor_low_component,
            max_removal_fraction=max_removal_fraction,
            warn_if_removal_concentrated=warn_if_removal_concentrated,
            direction=direction,
        )
        self._fingerprint = fingerprint
        self.report_: Optional[BYEReport] = None

    # -- inputs
    def _inputs(self, images: list, questions: list[str]) -> dict:
        questions = [q.replace("<image>", "").strip() for q in questions]  # reference re-inserts it in front
        if self.collate_fn is not None:
            return self.collate_fn(images, questions)
        proc = self.processor
        tok = getattr(proc, "tokenizer", proc)
        tok.padding_side = "left"
        prompts = [
            proc.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for q in questions
        ]
        return dict(proc(images=images, text=prompts, padding=True, return_tensors="pt"))

    @torch.no_grad()
    def entropy_batch(self, images: list, questions: list[str], device: Any = None) -> torch.Tensor:
        """(B, L) attention entropies for one batch (the plain-tensor core of :meth:`score`)."""
        inputs = self._inputs(images, questions)
        device = device or next(self.base.parameters()).device
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        if "attention_mask" not in inputs:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        image_mask = inputs["input_ids"] == self.image_token_id
        missing = (~image_mask.any(dim=1)).nonzero().flatten().tolist()
        if missing:
            raise HFTrustError(
                f"rows {missing} of the batch contain no image token (id {self.image_token_id}); "
                "check that the processor/collate_fn inserts the image placeholder."
            )
        was_training = self.model.training
        self.model.eval()
        with capture_rows(self.base, inputs["attention_mask"]) as cap:
            self.model(**inputs, use_cache=False)
        self.model.train(was_training)
        layer_ids = range(len(cap.rows)) if self.layers == "all" else list(self.layers)
        h = [image_attention_entropy(cap.rows[l], image_mask, self.eps, self.normalize_by_log_nv) for l in layer_ids]
        return torch.stack(h, dim=1).cpu()

    # -- datasets integration
    def fingerprint(self) -> str:
        """Deterministic cache key: model identity + a parameter digest + BYE parameters + code version."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            cfg = self.base.config
            h.update(str(getattr(cfg, "_name_or_path", "")).encode())
            with torch.no_grad():
                for name, p in self.model.state_dict().items():
                    h.update(name.encode())
                    h.update(str(tuple(p.shape)).encode())
                    if p.is_floating_point() and p.numel():
                        flat = p.detach().reshape(-1)
                        h.update(np.float64(flat.double().sum().item()).tobytes())
                        h.update(flat[:16].double().cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:24]
        key = json.dumps(
            {
                "w": self._fingerprint,
                "eps": self.eps,
                "layers": self.layers,
                "norm": self.normalize_by_log_nv,
                "img": self.image_column,
                "q": self.question_column,
                "collate": getattr(self.collate_fn, "__qualname__", None),
                "v": BYE_VERSION,
            },
            sort_keys=True,
            default=str,
        )
        return "bye-" + hashlib.sha256(key.encode()).hexdigest()[:32]

    def _check_columns(self, ds: Any) -> None:
        if len(ds) == 0:
            raise HFTrustError("the dataset is empty: BYE needs rows to profile.")
        for col, what in ((self.image_column, "images"), (self.question_column, "questions")):
            if col not in ds.column_names:
                raise HFTrustError(
                    f"the dataset has no {what} column {col!r} (columns: {ds.column_names}); "
                    f"pass `{'image' if what == 'images' else 'question'}_column=` to BYEFilter."
                )

    def entropies(self, ds: Any, load_from_cache_file: Optional[bool] = None, num_proc: Optional[int] = None) -> Any:
        """``ds`` plus the column ``bye_layer_entropy`` (L floats per row); cached on disk-backed datasets.

        ``num_proc > 1`` uses one GPU per worker via ``with_rank``; on CPU keep one process (each worker would
        receive a pickled copy of the model).
        """
        self._check_columns(ds)
        with_rank = bool(num_proc and num_proc > 1)
        if with_rank and not torch.cuda.is_available():
            raise HFTrustError("num_proc > 1 scores on several GPUs (one per rank); without CUDA leave num_proc=None.")

        def fn(batch: dict, rank: Optional[int] = None) -> dict:
            device = None
            if rank is not None and torch.cuda.is_available():
                device = torch.device(f"cuda:{rank % torch.cuda.device_count()}")
                self.model.to(device)
            e = self.entropy_batch(list(batch[self.image_column]), list(batch[self.question_column]), device)
            return {ENTROPY_COLUMN: e.tolist()}

        return ds.map(
            fn,
            batched=True,
            batch_size=self.batch_size,
            with_rank=with_rank,
            num_proc=num_proc,
            new_fingerprint=self.fingerprint(),
            load_from_cache_file=load_from_cache_file,
            desc="BYE attention entropy",
        )

    def _label_column(self, ds: Any) -> Optional[str]:
        if self.label_column is not None:
            return self.label_column
        return next((c for c in ("answer", "label") if c in ds.column_names), None)

    def fit(
        self, entropies: Any, labels: Optional[Sequence[Any]] = None, is_poison: Optional[Sequence[bool]] = None
    ) -> tuple[BYEReport, np.ndarray]:
        """Run the two GMM stages on an (N, L) entropy matrix (or a dataset holding ``bye_layer_entropy``)."""
        if hasattr(entropies, "column_names"):
            entropies = np.asarray(entropies[ENTROPY_COLUMN], dtype=np.float64)
        report, scores = bye_select(entropies, labels=labels, is_poison=is_poison, **self.select_kwargs)
        self.report_ = report
        return report, scores

    def score(self, ds: Any, load_from_cache_file: Optional[bool] = None, num_proc: Optional[int] = None) -> Any:
        """Every row kept, with ``bye_layer_entropy``, ``bye_score`` and ``bye_suspicious``; sets ``report_``."""
        scored = self.entropies(ds, load_from_cache_file=load_from_cache_file, num_proc=num_proc)
        lab_col = self._label_column(ds)
        labels = scored[lab_col] if lab_col else None
        poison = scored[self.poison_column] if self.poison_column else None
        report, scores = self.fit(np.asarray(scored[ENTROPY_COLUMN], dtype=np.float64), labels, poison)
        for col in (SCORE_COLUMN, SUSPICIOUS_COLUMN):
            if col in scored.column_names:
                scored = scored.remove_columns(col)
        scored = scored.add_column(SCORE_COLUMN, [float(s) for s in scores])
        return scored.add_column(SUSPICIOUS_COLUMN, list(report.suspicious))

    def __call__(
        self, ds: Any, load_from_cache_file: Optional[bool] = None, num_proc: Optional[int] = None
    ) -> tuple[Any, BYEReport]:
        """``(D_clean, report)``: rows flagged suspicious are dropped (the scored columns stay for audit)."""
        scored = self.score(ds, load_from_cache_file=load_from_cache_file, num_proc=num_proc)
        keep = [i for i, s in enumerate(scored[SUSPICIOUS_COLUMN]) if not s]
        return scored.select(keep), self.report_
