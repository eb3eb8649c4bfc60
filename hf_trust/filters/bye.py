"""BYE ("Believe Your Eyes", arXiv 2505.16916): attention-entropy backdoor-sample filtering.

The method, as in the official code (``bye.py`` + ``model_vqa.py --get-entropy``, spec section b):

1. prompt = first user turn (image + question) with the generation prefix; the answer is never fed;
2. a_l = head-mean attention of the last prompt position to the N_v image tokens, per decoder layer l;
3. p_l = a_l / Σ a_l  (renormalised over image tokens);  H_l = −Σ p_l · ln(p_l + ε), in fp32;
4. per layer, a 2-GMM on {H_l(i)}; layer l is *sensitive* iff |μ₁−μ₂| > k_σ·(σ₁+σ₂)  (k_σ = 2);
5. s_i = mean of H_l(i) over sensitive layers; a 2-GMM on s; the low-mean component is suspicious;
6. no sensitive layer → nothing removed (``status="no_sensitive_layers"``; the reference crashes here).

Step 4-5 alternatives (``layer_select="bsi"``, ``"top_kl:<k>"``, ``"robust"``) and the guard rails every mode
shares (removal cap, status, removed share per class) live in :mod:`hf_trust.filters.select`.

Everything after step 3 is :func:`bye_select` on a plain (N, L) array; :class:`BYEFilter` is the
``datasets`` adapter (batched ``map`` with an explicit fingerprint) around it.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch

from hf_trust.errors import HFTrustCacheError, HFTrustConfigError, HFTrustDataError
from hf_trust.fingerprint import callable_identity, json_sha256, model_identity, tokenizer_identity

from .capture import capture_rows, check_eager, decoder_attention_modules, image_token_id, unwrap_model
from .config import BYESelectConfig, reject_legacy_keywords
from .report import BYEReport
from .select import bye_select

#: Version of the entropy computation, part of the cache key: bump it when a change alters the entropies.
BYE_VERSION = "2"
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


@contextlib.contextmanager
def _left_padding(tok: Any) -> Iterator[None]:
    """Pad on the left for one call (every row's query is then the last position) and restore the caller's
    setting afterwards, even on error: the tokenizer belongs to the caller."""
    old = getattr(tok, "padding_side", None)
    tok.padding_side = "left"
    try:
        yield
    finally:
        tok.padding_side = old


def _check_layers(layers: Any, num_layers: int) -> str | list[int]:
    """``"all"`` or the list of decoder-layer indices to profile, each checked against the model's depth."""
    if layers == "all":
        return "all"
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not len(layers):
        raise HFTrustConfigError(f"layers must be 'all' or a non-empty list of layer indices, got {layers!r}.")
    bad = [l for l in layers if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < num_layers]
    if bad:
        raise HFTrustConfigError(
            f"layers={list(layers)} names {bad}, outside the {num_layers} decoder layers of this "
            f"model (valid: 0..{num_layers - 1}); fix `layers=` or use layers='all'."
        )
    return [int(l) for l in layers]


# ------------------------------------------------------------------ the datasets adapter
class BYEFilter:
    """BYE as a ``datasets`` transform: ``clean_ds, report = BYEFilter(model, processor)(ds)``.

    Args:
        model: a fine-tuned LLaVA-style VLM (``config.image_token_id``; eager attention in the language model),
            optionally wrapped by PEFT.
        processor: an HF multimodal processor; the prompt is rendered with its chat template
            (``[image, question]`` user turn, ``add_generation_prompt=True``). Not needed with ``collate_fn``.
            Its tokenizer's ``padding_side`` is set to left during a batch and restored afterwards.
        collate_fn: alternative to ``processor``: ``(images, questions) -> dict`` of model inputs (it must
            render the same prompt the model was fine-tuned with and insert the image tokens).
        collate_fingerprint: a string naming what ``collate_fn`` computes, for the cache key.  By default the
            callable's content is hashed (:func:`hf_trust.fingerprint.callable_identity`); a callable that cannot
            be hashed is never cached (a warning says so) unless this is given.
        image_column / question_column: dataset columns holding the image and the question.
        label_column: column for the removal histogram and removed share per class (``"answer"`` or
            ``"label"`` when present).
        poison_column: optional ground-truth column (bool) used only for the report's per-layer AUROC.
        batch_size: rows per forward pass.
        eps: inside the log of the entropy (reference: 1e-8).
        layers: ``"all"`` or a list of decoder layers to profile.
        normalize_by_log_nv: divide entropies by ln N_v (for models with per-image token counts).
        select_config: the selection settings (:class:`~hf_trust.filters.BYESelectConfig`: layer rule,
            thresholds, guard rails); ``None`` = the released code's rule with the default guard rails.
        fingerprint: identifies the weights in the ``datasets`` cache key; by default a cheap digest of the
            parameters (:func:`hf_trust.fingerprint.model_identity` with ``exact=False``, never a pickle of the
            model).  Cached entropies are checked against a fresh forward pass on read, so a wrong fingerprint
            gives a recomputation, not stale numbers.

    The query position (last prompt token), the head reduction (mean over all heads) and the suspicious side
    (low entropy) are fixed, as in the reference; they are not arguments.  Selection settings passed as loose
    keywords (``BYEFilter(model, proc, layer_select="robust")``) raise an ``HFTrustConfigError`` showing the
    ``select_config=BYESelectConfig(...)`` to pass instead.
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        collate_fn: Optional[Callable] = None,
        collate_fingerprint: Optional[str] = None,
        image_column: str = "image",
        question_column: str = "question",
        label_column: Optional[str] = None,
        poison_column: Optional[str] = None,
        batch_size: int = 8,
        eps: float = 1e-8,
        layers: str | Sequence[int] = "all",
        normalize_by_log_nv: bool = False,
        select_config: Optional[BYESelectConfig] = None,
        fingerprint: Optional[str] = None,
        **legacy: Any,
    ):
        reject_legacy_keywords("BYEFilter()", legacy)
        if processor is None and collate_fn is None:
            raise HFTrustConfigError(
                "BYEFilter needs a `processor` (HF multimodal processor with a chat template) or a "
                "`collate_fn(images, questions) -> model inputs`."
            )
        if collate_fn is not None and not callable(collate_fn):
            raise HFTrustConfigError(f"collate_fn must be callable (images, questions) -> dict, got {collate_fn!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise HFTrustConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}.")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and 0 < eps < 1):
            raise HFTrustConfigError(f"eps must be a small positive number (reference 1e-8), got {eps!r}.")
        if select_config is not None and not isinstance(select_config, BYESelectConfig):
            raise HFTrustConfigError(
                f"select_config must be a BYESelectConfig or None, got {type(select_config).__name__}; e.g. "
                "select_config=BYESelectConfig(layer_select='robust')."
            )
        self.select_config = select_config or BYESelectConfig()
        self.model = model
        self.base = unwrap_model(model)
        check_eager(self.base)
        self.image_token_id = image_token_id(self.base)
        self.num_decoder_layers = len(decoder_attention_modules(self.base))
        self.processor, self.collate_fn = processor, collate_fn
        self.collate_fingerprint = collate_fingerprint
        self.image_column, self.question_column = image_column, question_column
        self.label_column, self.poison_column = label_column, poison_column
        self.batch_size, self.eps = batch_size, eps
        self.layers = _check_layers(layers, self.num_decoder_layers)
        self.normalize_by_log_nv = normalize_by_log_nv
        self._fingerprint = fingerprint
        self.report_: Optional[BYEReport] = None

    # -- inputs
    def _inputs(self, images: list, questions: list[str]) -> dict:
        questions = [q.replace("<image>", "").strip() for q in questions]  # reference re-inserts it in front
        if self.collate_fn is not None:
            return self.collate_fn(images, questions)
        proc = self.processor
        tok = getattr(proc, "tokenizer", proc)
        with _left_padding(tok):
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
    def entropy_batch(
        self, images: list, questions: list[str], device: Any = None, row_ids: Optional[Sequence[int]] = None
    ) -> torch.Tensor:
        """(B, L) attention entropies for one batch (the plain-tensor core of :meth:`score`)."""
        row_ids = list(row_ids) if row_ids is not None else list(range(len(images)))
        missing_img = [row_ids[i] for i, im in enumerate(images) if im is None]
        if missing_img:
            raise HFTrustDataError(
                f"rows {missing_img[:10]} have no image (None) in column {self.image_column!r}; BYE scores the "
                "attention paid to image tokens, so every row needs an image: drop or fix those rows first."
            )
        bad_q = [row_ids[i] for i, q in enumerate(questions) if not isinstance(q, str)]
        if bad_q:
            raise HFTrustDataError(
                f"rows {bad_q[:10]} have a question that is not a string in column {self.question_column!r}; "
                "use '' for an image-only prompt."
            )
        inputs = self._inputs(images, questions)
        device = device or next(self.base.parameters()).device
        inputs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        if "attention_mask" not in inputs:
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        image_mask = inputs["input_ids"] == self.image_token_id
        missing = (~image_mask.any(dim=1)).nonzero().flatten().tolist()
        if missing:
            raise HFTrustDataError(
                f"rows {[row_ids[i] for i in missing]} contain no image token (id {self.image_token_id}); "
                "check that the processor/collate_fn inserts the image placeholder."
            )
        was_training = self.model.training
        self.model.eval()
        try:
            with capture_rows(self.base, inputs["attention_mask"]) as cap:
                self.model(**inputs, use_cache=False)
        finally:
            self.model.train(was_training)  # the caller's mode is restored, even on error
        layer_ids = range(len(cap.rows)) if self.layers == "all" else list(self.layers)
        h = [image_attention_entropy(cap.rows[l], image_mask, self.eps, self.normalize_by_log_nv) for l in layer_ids]
        return torch.stack(h, dim=1).cpu()

    # -- datasets integration
    def _collate_key(self) -> Optional[str]:
        if self.collate_fn is None:
            return None
        if self.collate_fingerprint is not None:
            return "user:" + str(self.collate_fingerprint)
        return callable_identity(self.collate_fn)

    def fingerprint(self, ds: Any = None) -> Optional[str]:
        """Deterministic cache key of the entropies, or ``None`` when the inputs cannot be identified (then
        nothing is cached).

        Keyed on everything that determines the entropies: the weights (a cheap
        :func:`~hf_trust.fingerprint.model_identity` digest, enough because the cache is checked on read, or the
        user's ``fingerprint``), the prompt path (:func:`~hf_trust.fingerprint.tokenizer_identity` of the
        processor, or the collate function's :func:`~hf_trust.fingerprint.callable_identity`), the dataset's own
        fingerprint, the scoring settings and :data:`BYE_VERSION`.  The selection config is not part of it: the
        cached column holds entropies only, and the selection runs on them afresh every time.
        """
        if self._fingerprint is None:
            self._fingerprint = model_identity(self.model, exact=False)
        collate = self._collate_key()
        if self.collate_fn is not None and collate is None:
            return None
        key = {
            "w": self._fingerprint,
            "eps": self.eps,
            "layers": self.layers,
            "norm": self.normalize_by_log_nv,
            "img": self.image_column,
            "q": self.question_column,
            "collate": collate,
            "processor": tokenizer_identity(self.processor) if self.collate_fn is None else None,
            "data": getattr(ds, "_fingerprint", None),
            "v": BYE_VERSION,
        }
        return "bye-" + json_sha256(key)[:32]

    def _check_columns(self, ds: Any) -> None:
        if len(ds) == 0:
            raise HFTrustDataError("the dataset is empty: BYE needs rows to profile.")
        for col, what in ((self.image_column, "images"), (self.question_column, "questions")):
            if col not in ds.column_names:
                raise HFTrustDataError(
                    f"the dataset has no {what} column {col!r} (columns: {ds.column_names}); "
                    f"pass `{'image' if what == 'images' else 'question'}_column=` to BYEFilter."
                )
        for col, what in ((self.label_column, "label_column"), (self.poison_column, "poison_column")):
            if col is not None and col not in ds.column_names:
                raise HFTrustDataError(f"{what}={col!r} is not a column of the dataset (columns: {ds.column_names}).")

    def entropies(self, ds: Any, load_from_cache_file: Optional[bool] = None, num_proc: Optional[int] = None) -> Any:
        """``ds`` plus the column ``bye_layer_entropy`` (L floats per row); cached on disk-backed datasets.

        The cache file (written by ``datasets`` to a temporary file and renamed into place) is keyed on
        :meth:`fingerprint`.  On a disk-backed dataset the first batch is recomputed and compared with what
        the cache returned; a mismatch (stale or corrupt cache) recomputes everything, with a warning.
        ``num_proc > 1`` uses one GPU per worker via ``with_rank``; on CPU keep one process (each worker would
        receive a pickled copy of the model).
        """
        self._check_columns(ds)
        with_rank = bool(num_proc and num_proc > 1)
        if with_rank and not torch.cuda.is_available():
            raise HFTrustConfigError(
                "num_proc > 1 scores on several GPUs (one per rank); without CUDA leave num_proc=None."
            )

        def fn(batch: dict, indices: list[int], rank: Optional[int] = None) -> dict:
            device = None
            if rank is not None and torch.cuda.is_available():
                device = torch.device(f"cuda:{rank % torch.cuda.device_count()}")
                self.model.to(device)
            e = self.entropy_batch(list(batch[self.image_column]), list(batch[self.question_column]), device, indices)
            return {ENTROPY_COLUMN: e.tolist()}

        fp = self.fingerprint(ds)
        cacheable = fp is not None and bool(getattr(ds, "cache_files", None))
        if fp is None:
            warnings.warn(
                "BYEFilter: collate_fn cannot be identified (it could not be hashed), so its entropies are not "
                "cached; pass collate_fingerprint='<name of what it renders>' to enable the cache.",
                stacklevel=2,
            )

        def run(load: Optional[bool]) -> Any:
            return ds.map(
                fn,
                batched=True,
                batch_size=self.batch_size,
                with_indices=True,
                with_rank=with_rank,
                num_proc=num_proc,
                new_fingerprint=fp,
                load_from_cache_file=load if fp is not None else False,
                keep_in_memory=fp is None,
                desc="BYE attention entropy",
            )

        out = run(load_from_cache_file)
        if cacheable and load_from_cache_file is not False and not self._cache_matches(ds, out):
            msg = (
                "BYEFilter: the cached attention entropies do not match a fresh forward pass on the first batch "
                "(stale or corrupt cache, or a `fingerprint=` that does not identify the weights); recomputing."
            )
            warnings.warn(msg, stacklevel=2)
            out = run(False)
        return out

    def _cache_matches(self, ds: Any, out: Any) -> bool:
        """Recompute the first batch and compare with ``out`` (what the cache returned)."""
        k = min(self.batch_size, len(ds))
        try:
            cached = np.asarray(out.select(range(k))[ENTROPY_COLUMN], dtype=np.float64)
        except Exception as exc:  # unreadable cache file
            raise HFTrustCacheError(f"the BYE entropy cache of this dataset is unreadable ({exc}).") from exc
        head = ds.select(range(k))
        fresh = self.entropy_batch(list(head[self.image_column]), list(head[self.question_column])).double().numpy()
        return cached.shape == fresh.shape and bool(np.allclose(cached, fresh, atol=1e-4, rtol=1e-4, equal_nan=True))

    def _label_column(self, ds: Any) -> Optional[str]:
        if self.label_column is not None:
            return self.label_column
        return next((c for c in ("answer", "label") if c in ds.column_names), None)

    def fit(
        self, entropies: Any, labels: Optional[Sequence[Any]] = None, is_poison: Optional[Sequence[bool]] = None
    ) -> tuple[BYEReport, np.ndarray]:
        """Run the selection on an (N, L) entropy matrix (or a dataset holding ``bye_layer_entropy``)."""
        if hasattr(entropies, "column_names"):
            entropies = np.asarray(entropies[ENTROPY_COLUMN], dtype=np.float64)
        report, scores = bye_select(entropies, self.select_config, labels=labels, is_poison=is_poison)
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
