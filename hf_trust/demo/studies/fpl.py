"""The study on bundled offline data: a small CLIP pretrained here on digit images with template
captions, then federated LPT / VPT / both under label skew, domain shift and both.

This is a toy stand-in for the study's CLIP ViT-B/16 benchmarks (CIFAR-100, Office-Home, DomainNet): its
towers are tiny, so the figures show directions, not the paper's magnitudes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from hf_trust.atomic import atomic_directory
from hf_trust.errors import HFTrustConfigError
from hf_trust.fingerprint import arrays_sha256, json_sha256, tokenizer_identity
from hf_trust.trainers.federated import DirichletLabelPartitioner, DomainPartitioner, FedAvg
from hf_trust.trainers.fpl import FederatedPromptTrainer, FPLConfig, PromptConfig

logger = logging.getLogger("hf_trust.demo.fpl")

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PRETRAIN_TEMPLATES = ("a photo of the digit {}.", "a picture of a {}.", "the number {}.", "a drawing of a {}.")
CLASS_TEMPLATE = "a photo of the digit {}."
SCENARIOS = ("label_skew", "domain_shift", "both")
KINDS = ("lpt", "vpt", "both")


class TensorRows:
    """In-memory columns (tensors or lists) with the slice of the ``datasets.Dataset`` API the federated
    core uses (``column_names``, ``select``, row/column indexing); batching from it avoids the Arrow
    to-tensor conversion that dominated small-image rounds."""

    def __init__(self, columns: dict[str, Any]):
        self.columns = columns
        self.column_names = list(columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.columns[key]
        idx = list(range(len(self)))[key] if isinstance(key, slice) else list(key)
        return {
            k: (v[torch.as_tensor(idx, dtype=torch.long)] if isinstance(v, torch.Tensor) else [v[i] for i in idx])
            for k, v in self.columns.items()
        }

    def select(self, indices: Sequence[int]) -> TensorRows:
        return TensorRows(self[list(indices)])

    def where(self, column: str, value: Any) -> TensorRows:
        return self.select([i for i, v in enumerate(self.columns[column]) if v == value])

    @classmethod
    def from_dataset(cls, ds: Any) -> TensorRows:
        return cls(
            {
                "pixel_values": torch.as_tensor(np.asarray(ds["pixel_values"], dtype=np.float32)),
                "label": torch.as_tensor(np.asarray(ds["label"]), dtype=torch.long),
                "domain": list(ds["domain"]),
            }
        )


@dataclass
class StudyData:
    """Preprocessed splits: ``pretrain`` (clean domain only), ``train`` and ``test`` (all domains)."""

    pretrain: Any
    train: Any
    test: Any
    domains: list[str]


def _pixels(images: Sequence[Any]) -> np.ndarray:
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    arr = (arr - 0.5) / 0.5  # the tiny CLIP's own normalisation
    return np.repeat(arr[:, None], 3, axis=1)


def load_study_data(image_size: int = 16, font_per_class: int = 60, seed: int = 0) -> StudyData:
    """Digit domains (handwritten ``sklearn``, printed ``font``, ``corrupted``) as pixel tensors.

    Half of the clean handwritten digits pretrain the CLIP; the other half and the two shifted domains
    are split 60/40 into federated train / test.  ``corrupted`` images are made from the clean ones, so
    the shifted domain shares digit shapes with the pretraining half (noted in the results).
    """
    from datasets import Dataset, concatenate_datasets

    from hf_trust import assets

    rng = np.random.default_rng(seed)
    parts = []
    for i, dom in enumerate(assets.DIGIT_DOMAINS):
        ds = assets.load_digits(
            dom, n_per_class=font_per_class if dom == "font" else None, seed=seed + i, size=image_size
        )
        parts.append(
            Dataset.from_dict(
                {"pixel_values": _pixels(ds["image"]), "label": list(ds["label"]), "domain": [dom] * len(ds)}
            )
        )
    clean = parts[0]
    perm = rng.permutation(len(clean))
    pretrain = clean.select(np.sort(perm[: len(clean) // 2]).tolist())
    fed = concatenate_datasets([clean.select(np.sort(perm[len(clean) // 2 :]).tolist())] + parts[1:])
    doms = np.asarray(fed["domain"])
    train_rows, test_rows = [], []
    for dom in assets.DIGIT_DOMAINS:  # 60/40 inside every domain
        rows = rng.permutation(np.flatnonzero(doms == dom))
        cut = int(round(0.6 * len(rows)))
        train_rows += rows[:cut].tolist()
        test_rows += rows[cut:].tolist()
    train, test = fed.select(sorted(train_rows)), fed.select(sorted(test_rows))
    return StudyData(*(TensorRows.from_dataset(d) for d in (pretrain, train, test)), list(assets.DIGIT_DOMAINS))


def _tiny_clip_config(tokenizer: Any, image_size: int) -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=4,
            num_channels=3,
        ),
        projection_dim=32,
    )


def _contrastive_steps(
    model: Any,
    tok: Any,
    data: StudyData,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: Optional[Callable],
) -> None:
    """Train ``model`` in place: per step a caption template, image-to-caption cross-entropy over the ten class
    captions and the caption-to-image term over the batch's classes."""
    captions = [[t.format(n) for n in DIGIT_NAMES] for t in PRETRAIN_TEMPLATES]
    enc = [tok(c, padding="max_length", max_length=16, return_tensors="pt") for c in captions]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    x_all, y_all = data.pretrain["pixel_values"], data.pretrain["label"]
    gen = torch.Generator().manual_seed(seed)
    bar = progress(range(steps), desc="pretrain tiny CLIP") if progress else range(steps)
    for _ in bar:
        rows = torch.randint(len(y_all), (batch_size,), generator=gen)
        t = int(torch.randint(len(enc), (1,), generator=gen))
        img = model.visual_projection(model.vision_model(pixel_values=x_all[rows]).pooler_output)
        txt = model.text_projection(model.text_model(**enc[t]).pooler_output)
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * img @ txt.t()
        y = y_all[rows]
        loss = torch.nn.functional.cross_entropy(logits, y)
        # caption -> image over the batch: each present class's caption should pick its own images
        present = torch.unique(y)
        target = (y[None, :] == present[:, None]).float()
        loss = loss + torch.nn.functional.cross_entropy(logits.t()[present], target / target.sum(1, keepdim=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))


def pretrain_tiny_clip(
    data: StudyData,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    cache: bool = True,
    progress: Optional[Callable] = None,
) -> tuple[Any, Any]:
    """A small ``CLIPModel`` trained on the clean digits with template captions (cached on disk).

    Each step draws a caption template and trains image-to-caption cross-entropy over the ten class
    captions of that template plus the symmetric caption-to-image term of the batch's classes, i.e.
    CLIP's contrastive loss with template captions as the text side.
    """
    from transformers import CLIPModel

    from hf_trust import assets

    tok = assets.clip_tokenizer()
    image_size = int(data.pretrain["pixel_values"].shape[-1])
    # Keyed on everything that determines the weights: the training options, the very pretraining rows
    # and the tokenizer's vocabulary (which fixes the caption ids).
    key = {
        "model": "fpl-clip",
        "version": 2,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "image_size": image_size,
        "data": arrays_sha256(data.pretrain["pixel_values"], data.pretrain["label"]),
        "tokenizer": tokenizer_identity(tok),
    }
    path = assets.cache_dir() / "fpl" / f"tiny_clip_{json_sha256(key)[:16]}"
    if cache and (path / "config.json").is_file():
        try:
            return CLIPModel.from_pretrained(path).eval(), tok
        except Exception as exc:  # a damaged cache entry is rebuilt, not trusted
            logger.warning("cached tiny CLIP at %s is unreadable (%s); pretraining it again.", path, exc)
    torch.manual_seed(seed)
    model = CLIPModel(_tiny_clip_config(tok, image_size)).train()
    _contrastive_steps(model, tok, data, steps, batch_size, lr, seed, progress)
    model.eval()
    if cache:
        with atomic_directory(path) as staging:  # the cache entry appears whole or not at all
            model.save_pretrained(staging)
    return model, tok


def scenario_split(data: StudyData, scenario: str, num_clients: int, beta: float, seed: int):
    """``(train rows, partitions, test rows)`` of a scenario: label skew on the clean domain, domain shift
    (clients spread over the domains, uniform inside), or both (Dir(beta) inside each domain)."""
    if scenario == "label_skew":
        tr, te = data.train.where("domain", "sklearn"), data.test.where("domain", "sklearn")
        parts = DirichletLabelPartitioner(num_clients=num_clients, alpha=beta, min_size=10, seed=seed).split(tr)
    elif scenario in ("domain_shift", "both"):
        tr, te = data.train, data.test
        alpha = beta if scenario == "both" else None
        parts = DomainPartitioner(num_clients=num_clients, alpha=alpha, min_size=2, seed=seed).split(tr)
    else:
        raise HFTrustConfigError(f"scenario must be one of {SCENARIOS}, got {scenario!r}.")
    return tr, parts, te


@dataclass
class RunResult:
    scenario: str
    kind: str
    seed: int
    zero_shot: float
    round0: float
    final: float
    best: float
    last_mean: float
    per_domain: dict[str, float] = field(default_factory=dict)
    update_cos: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def _run_configs(
    kind: str,
    seed: int,
    rounds: int,
    n_ctx: int,
    lr: float,
    output_dir: Optional[str],
    vptpr: bool,
    aggregation: str,
) -> tuple[PromptConfig, FPLConfig]:
    """The prompt and federation settings of one study run (Adam, 1 local epoch, batch 32, no checkpoints)."""
    prompt = PromptConfig(kind=kind, n_ctx_text=n_ctx, n_ctx_vision=n_ctx, vision_template=CLASS_TEMPLATE, seed=seed)
    cfg = FPLConfig(
        rounds=rounds,
        local_epochs=1,
        seed=seed,
        optimizer="adam",
        lr=lr,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=32,
        eval_batch_size=256,
        aggregation=aggregation,
        vptpr=vptpr,
        output_dir=output_dir,
        save_every=0,
    )
    return prompt, cfg


def run_fpl(
    clip: Any,
    tok: Any,
    data: StudyData,
    scenario: str,
    kind: str,
    seed: int,
    rounds: int = 8,
    num_clients: Optional[int] = None,
    n_ctx: int = 4,
    beta: float = 0.1,
    lr: float = 3e-3,
    output_dir: Optional[str] = None,
    vptpr: bool = False,
    aggregation: str = "weight",
) -> RunResult:
    """One federation of the study; accuracy on the scenario's test domains (and each domain)."""
    k = num_clients or (8 if scenario == "label_skew" else 2 * len(data.domains))
    tr, parts, te = scenario_split(data, scenario, k, beta, seed)
    evals = {"all": te}
    if scenario != "label_skew":
        for d in data.domains:
            evals[d] = te.where("domain", d)
    prompt, cfg = _run_configs(kind, seed, rounds, n_ctx, lr, output_dir, vptpr, aggregation)
    zs = zero_shot_accuracy(clip, tok, te)  # before the prompt hooks are attached
    trainer = FederatedPromptTrainer(
        clip, DIGIT_NAMES, prompt=prompt, strategy=FedAvg(), config=cfg, tokenizer=tok, eval_datasets=evals
    )
    round0 = trainer.evaluate(te)["accuracy"]
    hist = trainer.fit(parts)
    s = trainer.summary("eval_all_accuracy")
    last = hist[-1]
    res = RunResult(
        scenario,
        kind,
        seed,
        zs,
        round0,
        last["eval_all_accuracy"],
        s["best"],
        s["last_mean"],
        {d: last[f"eval_{d}_accuracy"] for d in evals if d != "all"},
        {
            g: float(np.mean([r[f"update_cos_{g}"] for r in hist if f"update_cos_{g}" in r]))
            for g in ("lpt", "vpt")
            if any(f"update_cos_{g}" in r for r in hist)
        },
        [{kk: v for kk, v in r.items() if kk != "client_records"} for r in hist],
    )
    trainer.model.remove_prompts()
    return res


def zero_shot_accuracy(clip: Any, tok: Any, test: Any) -> float:
    """The frozen CLIP with the class template and no prompts."""
    ids = tok([CLASS_TEMPLATE.format(n) for n in DIGIT_NAMES], padding=True, return_tensors="pt")
    with torch.no_grad():
        t = clip.text_projection(clip.text_model(**ids).pooler_output)
        i = clip.visual_projection(clip.vision_model(pixel_values=test["pixel_values"]).pooler_output)
        pred = (i / i.norm(dim=-1, keepdim=True) @ (t / t.norm(dim=-1, keepdim=True)).t()).argmax(-1)
    return float((pred == test["label"]).float().mean())


def run_study(
    clip: Any,
    tok: Any,
    data: StudyData,
    seeds: Sequence[int],
    rounds: int,
    sweeps: bool = False,
    client_counts: Sequence[int] = (4, 8, 16),
    prompt_lengths: Sequence[int] = (1, 4, 8),
    progress: Optional[Callable] = None,
    output_dir: Optional[str] = None,
    sweep_seeds: Optional[Sequence[int]] = None,
) -> dict[str, Any]:
    """Three scenarios x {LPT, VPT, both} x seeds, and optionally the client-count sweep (label skew) and
    the prompt-length sweep (domain shift) for LPT and VPT on ``sweep_seeds`` (default: the first seed).
    Returns the runs and the verdicts."""
    sweep_seeds = list(sweep_seeds) if sweep_seeds is not None else list(seeds[:1])
    jobs = [("main", sc, kind, s, {}) for s in seeds for sc in SCENARIOS for kind in KINDS]
    if sweeps:
        jobs += [
            ("clients", "label_skew", kind, s, {"num_clients": k})
            for s in sweep_seeds
            for kind in ("lpt", "vpt")
            for k in client_counts
        ]
        jobs += [
            ("length", "domain_shift", kind, s, {"n_ctx": n})
            for s in sweep_seeds
            for kind in ("lpt", "vpt")
            for n in prompt_lengths
        ]
    runs = []
    it = progress(jobs, desc="FPL runs") if progress else jobs
    for group, sc, kind, s, kw in it:
        out = None
        if output_dir and group == "main" and s == seeds[0]:
            out = f"{output_dir}/{sc}_{kind}"
        r = run_fpl(clip, tok, data, sc, kind, s, rounds=rounds, output_dir=out, **kw)
        runs.append({"group": group, **kw, **{k: v for k, v in r.__dict__.items() if k != "history"}})
    return {"runs": runs, "verdicts": verdicts(runs)}


def _mean_std(vals: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=np.float64)
    return float(a.mean()), float(a.std()) if len(a) > 1 else 0.0


def gains(runs: Sequence[dict], scenario: str, kind: str) -> list[float]:
    """Final accuracy minus zero-shot accuracy, per seed."""
    return [
        r["final"] - r["zero_shot"]
        for r in runs
        if r["group"] == "main" and r["scenario"] == scenario and r["kind"] == kind
    ]


def verdicts(runs: Sequence[dict]) -> dict[str, str]:
    """The study's directional findings checked on the measured gains (mean over seeds)."""
    g = {(sc, k): _mean_std(gains(runs, sc, k))[0] for sc in SCENARIOS for k in KINDS if gains(runs, sc, k)}
    out = {}
    if ("label_skew", "lpt") in g and ("label_skew", "vpt") in g:
        a, b = g[("label_skew", "lpt")], g[("label_skew", "vpt")]
        out["label skew: LPT gains >= VPT"] = f"{'holds' if a >= b else 'does not hold'} ({a:+.3f} vs {b:+.3f})"
    if ("domain_shift", "lpt") in g and ("domain_shift", "vpt") in g:
        a, b = g[("domain_shift", "vpt")], g[("domain_shift", "lpt")]
        out["domain shift: VPT gains more than LPT"] = f"{'holds' if a > b else 'does not hold'} ({a:+.3f} vs {b:+.3f})"
    if ("both", "both") in g:
        best_single = max(g.get(("both", "lpt"), -1), g.get(("both", "vpt"), -1))
        a = g[("both", "both")]
        out["both skews: LPT+VPT beats the better single prompt"] = (
            f"{'holds' if a > best_single else 'does not hold'} ({a:+.3f} vs {best_single:+.3f})"
        )
    cos = {
        k: [
            r["update_cos"][k]
            for r in runs
            if r["group"] == "main" and r["scenario"] == "label_skew" and r["kind"] == k and k in r["update_cos"]
        ]
        for k in ("lpt", "vpt")
    }
    if cos["lpt"] and cos["vpt"]:
        a, b = float(np.mean(cos["vpt"])), float(np.mean(cos["lpt"]))
        out["label skew: client-global update cosine lower for VPT"] = (
            f"{'holds' if a < b else 'does not hold'} (VPT {a:.3f} vs LPT {b:.3f})"
        )
    return out
