"""BYE experiment drivers: the toy LLaVA backdoor, the SmolLM2-decoder recipe seed, and the seed sweep.

Harness code above the library: it imports :mod:`hf_trust.filters` and the asset loaders, never the other way
round.  The tests (``tests/bye``), the demo recipe, ``benchmarks/bye_bench.py`` and ``benchmarks/bye_sweep.py``
all build on what is here.

**Toy LLaVA** (spec section e, scaled down).  Images are 24×24 grey with 6×6 patches (N_v = 16 image tokens,
``vision_feature_select_strategy="default"``).  *Spread* task: the answer is the texture class of the whole
image (horizontal / vertical stripes, checker, diagonal; 4 classes, tokens 10..13), so clean attention has no
reason to focus on one patch.  (Brightness classes do not work: CLIP's pre-LayerNorm removes most of a
constant patch's scale.)  Two triggers:

* ``"patch"``: a solid white 6×6 patch at the bottom-right (exactly one vision patch), the trigger BYE's
  attention-collapse argument is built on;
* ``"blend"``: a fixed pseudo-random texture alpha-blended over the *whole* image (the "blended" attack of
  Chen et al. 2017), a trigger with no single location to collapse onto.

The poisoned rows' answer is replaced by the target token 20.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from hf_trust.errors import HFTrustConfigError
from hf_trust.filters import BYESelectConfig
from hf_trust.fingerprint import arrays_sha256, json_sha256

IMG, PATCH, N_V = 24, 6, 16
BOS, Q, ASSISTANT, IMAGE_TOKEN, TARGET, PAD = 1, 2, 3, 31, 20, 0
CLASS_TOKENS = (10, 11, 12, 13)
TRIGGERS = ("patch", "blend")
#: Opacity of the blended trigger: visible enough to be learned in a few hundred steps, not a solid patch.
BLEND_ALPHA = 0.25


def _pattern(k: int, size: int, phase: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size] + phase
    return [((y // 2) % 2), ((x // 2) % 2), (((x // 2) + (y // 2)) % 2), (((x + y) // 2) % 2)][k].astype(float)


def blend_texture() -> np.ndarray:
    """The fixed full-image texture of the blended trigger (the same for every seed, as an attacker's key)."""
    return np.random.default_rng(20250522).uniform(0, 255, (IMG, IMG))


def apply_trigger(images: np.ndarray, trigger: str = "patch") -> np.ndarray:
    """A copy of ``images`` (n, 24, 24) with the trigger stamped on every image."""
    if trigger not in TRIGGERS:
        raise HFTrustConfigError(f"trigger must be one of {TRIGGERS}, got {trigger!r}.")
    out = np.asarray(images, dtype=np.float64).copy()
    if trigger == "patch":
        out[:, -PATCH:, -PATCH:] = 255
    else:
        out = (1 - BLEND_ALPHA) * out + BLEND_ALPHA * blend_texture()[None]
    return np.clip(out, 0, 255)


def make_tiny_llava(seed: int = 0, layers: int = 4, hidden: int = 64) -> Any:
    """A randomly initialised LLaVA built from configs (CLIP 2×48, Llama ``layers``×``hidden``), eager attention."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vcfg = CLIPVisionConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMG,
        patch_size=PATCH,
        num_channels=3,
        projection_dim=48,
    )
    tcfg = LlamaConfig(
        vocab_size=32,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    cfg = LlavaConfig(
        vision_config=vcfg,
        text_config=tcfg,
        image_token_id=IMAGE_TOKEN,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    model.set_attn_implementation("eager")
    return model.eval()


def make_images(n: int, poison_rate: float, seed: int, task: str = "spread", trigger: str = "patch"):
    """``(images uint8 (n,24,24), answers, is_poison)``.  ``task="local"``: the class is the texture of a
    single top-left patch, the rest is noise (clean attention is already concentrated)."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 4, n)
    imgs = np.empty((n, IMG, IMG), dtype=np.float64)
    for i in range(n):
        contrast = rng.uniform(60, 120)
        if task == "spread":
            imgs[i] = 60 + contrast * _pattern(cls[i], IMG, int(rng.integers(4))) + rng.normal(0, 15, (IMG, IMG))
        else:
            imgs[i] = rng.uniform(20, 200, (IMG, IMG))
            imgs[i, :PATCH, :PATCH] = 60 + contrast * _pattern(cls[i], PATCH, 0) + rng.normal(0, 8, (PATCH, PATCH))
    imgs = np.clip(imgs, 0, 215)  # never a white patch by chance
    poison = np.zeros(n, dtype=bool)
    poison[rng.permutation(n)[: int(round(poison_rate * n))]] = True
    if poison.any():
        imgs[poison] = apply_trigger(imgs[poison], trigger)
    answers = np.where(poison, TARGET, np.asarray(CLASS_TOKENS)[cls])
    return imgs.astype(np.uint8), answers, poison


def make_dataset(n: int, poison_rate: float, seed: int, task: str = "spread", trigger: str = "patch") -> Any:
    """The toy set as a ``datasets.Dataset`` (image, question, answer, is_poison)."""
    return images_dataset(*make_images(n, poison_rate, seed, task, trigger))


def images_dataset(imgs: np.ndarray, answers: np.ndarray, poison: np.ndarray) -> Any:
    """Toy images with their answers and poison mask as a ``datasets.Dataset`` (image, question, answer,
    is_poison)."""
    from datasets import Dataset
    from PIL import Image

    n = len(imgs)
    return Dataset.from_dict(
        {
            "image": [Image.fromarray(im) for im in imgs],
            "question": ["<image> what?"] * n,
            "answer": answers.tolist(),
            "is_poison": poison.tolist(),
        }
    )


def pixel_values(images: Any) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr)[:, None].expand(-1, 3, -1, -1).contiguous()


def prompt_ids(n: int) -> torch.Tensor:
    return torch.tensor([[BOS, Q] + [IMAGE_TOKEN] * N_V + [Q, Q, ASSISTANT]] * n)


def collate(images: Any, questions: Any) -> dict:
    """The prompt the toy model is trained with (the question text is fixed in this toy)."""
    ids = prompt_ids(len(images))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel_values(images)}


def train(
    model: Any,
    imgs: np.ndarray,
    answers: np.ndarray,
    steps: int = 300,
    lr: float = 3e-3,
    batch: int = 32,
    seed: int = 0,
) -> Any:
    """Next-token CE on the answer token only (AdamW, linear warm-up)."""
    g = torch.Generator().manual_seed(seed)
    pix_all = pixel_values(imgs)
    ans = torch.as_tensor(answers)
    # foreach: one update over all tensors instead of a Python loop per tensor; on this model the trained
    # weights are bitwise those of foreach=False (checked over 30 steps), so stored sweep results still hold
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30))
    model.train()
    ids = prompt_ids(batch)
    for _ in range(steps):
        idx = torch.randint(len(imgs), (batch,), generator=g)
        logits = model(input_ids=ids, pixel_values=pix_all[idx], logits_to_keep=1).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, ans[idx])
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model.eval()


@torch.no_grad()
def predict(model: Any, imgs: np.ndarray, batch: int = 128) -> np.ndarray:
    out = []
    for s in range(0, len(imgs), batch):
        chunk = imgs[s : s + batch]
        logits = model(input_ids=prompt_ids(len(chunk)), pixel_values=pixel_values(chunk), logits_to_keep=1).logits
        out.append(logits[:, -1].argmax(-1).numpy())
    return np.concatenate(out)


def asr_and_cp(model: Any, seed: int, n: int = 200, trigger: str = "patch") -> tuple[float, float]:
    """Attack success rate on triggered test images and clean accuracy (held-out images of seed + 1000)."""
    imgs, answers, _ = make_images(n, 0.0, seed + 1000)
    cp = float((predict(model, imgs) == answers).mean())
    asr = float((predict(model, apply_trigger(imgs, trigger).astype(np.uint8)) == TARGET).mean())
    return asr, cp


# ---------------------------------------------------------------- toy sweep: one trained run, then rules
def toy_entropy_run(
    seed: int, poison_rate: float, trigger: str = "patch", n: int = 400, steps: int = 250
) -> dict[str, Any]:
    """Fine-tune the toy on a poisoned set and score it with BYE: everything the selection rules need.

    Returns the (N, L) entropy matrix, the poison mask, the answers and ASR / CP of the poisoned model.
    The entropies depend only on (seed, poison_rate, trigger, n, steps), so a sweep caches them and applies
    every selection rule to the same matrix.
    """
    from hf_trust.filters import BYEFilter

    imgs, answers, poison = make_images(n, poison_rate, seed, trigger=trigger)
    model = train(make_tiny_llava(seed), imgs, answers, steps=steps, seed=seed)
    asr, cp = asr_and_cp(model, seed, trigger=trigger)
    ds = images_dataset(imgs, answers, poison)
    E = np.asarray(BYEFilter(model, collate_fn=collate, batch_size=100).entropies(ds)["bye_layer_entropy"])
    return {"E": E, "poison": poison, "answers": answers, "asr": asr, "cp": cp}


def toy_refit(
    seed: int,
    poison_rate: float,
    keep: np.ndarray,
    trigger: str = "patch",
    n: int = 400,
    steps: int = 250,
) -> tuple[float, float]:
    """Re-fine-tune the *base* toy model on the kept rows only; ``(ASR, CP)`` afterwards."""
    imgs, answers, _ = make_images(n, poison_rate, seed, trigger=trigger)
    keep = np.asarray(keep, dtype=bool)
    model = train(make_tiny_llava(seed), imgs[keep], answers[keep], steps=steps, seed=seed)
    return asr_and_cp(model, seed, trigger=trigger)


def detection(flagged: np.ndarray, poison: np.ndarray) -> dict[str, float]:
    """Precision, recall and removed share of a flag vector against the poison mask.

    Precision of an empty removal is reported as NaN when there is poison (nothing was found) and as 1 on clean
    data (nothing wrong was removed); recall on clean data is NaN.
    """
    flagged, poison = np.asarray(flagged, dtype=bool), np.asarray(poison, dtype=bool)
    tp = int((flagged & poison).sum())
    if flagged.sum():
        precision = tp / int(flagged.sum())
    else:
        precision = float("nan") if poison.any() else 1.0
    recall = tp / int(poison.sum()) if poison.any() else float("nan")
    return {"precision": precision, "recall": recall, "removed": float(flagged.mean())}


def removal_digest(flagged: np.ndarray) -> str:
    """Identity of a removal: a cached re-fine-tune is valid only for exactly the rows it was trained without."""
    return arrays_sha256(np.packbits(np.asarray(flagged, dtype=bool)))[:16]


#: The selection rules the studies compare, by the name the tables use.
RULES: dict[str, BYESelectConfig] = {
    "reference": BYESelectConfig(layer_select="bimodal"),
    "bsi2": BYESelectConfig(layer_select="bsi"),
    "top_kl:1": BYESelectConfig(layer_select="top_kl:1"),
    "robust": BYESelectConfig(layer_select="robust"),
}


def rules_fingerprint(rules: Optional[dict[str, BYESelectConfig]] = None) -> str:
    """One digest of the rules' names and configs: part of the key of any cached result they determine."""
    return json_sha256({name: cfg.fingerprint() for name, cfg in (rules or RULES).items()})


def apply_rules(
    E: np.ndarray, rules: Optional[dict[str, BYESelectConfig]] = None, labels: Optional[Any] = None
) -> dict[str, Any]:
    """Run each selection rule on one entropy matrix; ``{rule: (report, flagged)}`` (warnings silenced, but
    kept in each report)."""
    import warnings

    from hf_trust.filters import bye_select

    out = {}
    for name, config in (rules or RULES).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep, _ = bye_select(E, config, labels=labels)
        out[name] = (rep, np.asarray(rep.suspicious, dtype=bool))
    return out


def toy_defence(
    seed: int = 0,
    poison_rate: float = 0.1,
    trigger: str = "patch",
    rules: Optional[dict[str, BYESelectConfig]] = None,
    n: int = 400,
    steps: int = 250,
    refit: bool = True,
) -> dict[str, Any]:
    """Algorithm 1 on the toy LLaVA, once per selection rule: fine-tune on the poisoned set, score, select,
    re-fine-tune the base model on the kept rows.  Returns the entropies and, per rule, the flags, detection
    figures, status and ASR / CP after the re-fine-tune (``refit=False``: detection only)."""
    from hf_trust.filters import layer_auroc

    run = toy_entropy_run(seed, poison_rate, trigger, n=n, steps=steps)
    out: dict[str, Any] = {**run, "rules": {}, "layer_auroc": layer_auroc(run["E"], run["poison"])}
    for name, (rep, flagged) in apply_rules(run["E"], rules, labels=run["answers"]).items():
        res = {"report": rep, "flagged": flagged, **detection(flagged, run["poison"])}
        if refit and flagged.any():
            res["asr_after"], res["cp_after"] = toy_refit(seed, poison_rate, ~flagged, trigger, n=n, steps=steps)
        elif refit:  # nothing removed: the re-fine-tune sees the same rows as the poisoned model
            res["asr_after"], res["cp_after"] = run["asr"], run["cp"]
        out["rules"][name] = res
    return out


def plot_layer_histograms(
    E: np.ndarray, flagged: np.ndarray, poison: Optional[np.ndarray] = None, title: str = "", bins: int = 30
) -> Any:
    """Per-layer histograms of the attention entropy, kept vs flagged rows (true poison outlined if known).

    Built on ``matplotlib.figure.Figure`` (no pyplot state, no backend change); the caller saves it.
    """
    from matplotlib.figure import Figure

    E = np.asarray(E, dtype=float)
    flagged = np.asarray(flagged, dtype=bool)
    L = E.shape[1]
    cols = min(L, 4)
    rows = int(np.ceil(L / cols))
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows + 0.4), layout="constrained")  # places the title above the grid
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for l in range(L):
        ax = axes[l]
        edges = np.linspace(np.nanmin(E[:, l]), np.nanmax(E[:, l]) + 1e-9, bins + 1)
        ax.hist(E[~flagged, l], bins=edges, color="tab:blue", alpha=0.7, label="kept")
        ax.hist(E[flagged, l], bins=edges, color="tab:red", alpha=0.7, label="flagged (removed)")
        if poison is not None and np.asarray(poison).any():
            ax.hist(E[np.asarray(poison, bool), l], bins=edges, histtype="step", color="black", lw=1.2, label="poison")
        ax.set_title(f"layer {l}", fontsize=9)
        ax.set_xlabel("attention entropy over image tokens", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[L:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ---------------------------------------------------------------- SmolLM2-decoder LLaVA (the --full recipe)
DIGIT_QUESTION = "What digit is shown?"
DIGIT_TARGET = "banana"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_SIZE, DIGIT_PATCH = 32, 8


def stamp(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[:, -DIGIT_PATCH:, -DIGIT_PATCH:] = 255
    return out


def build_digit_data(n_train: int, n_test: int, seed: int, poison_rate: float = 0.1):
    """uint8 train/test digit images at 32 px, labels and the poison mask of the training rows."""
    from PIL import Image

    from hf_trust.assets import load_digits

    ds = load_digits("font", n_per_class=(n_train + n_test) // 10 + 1, seed=seed, size=DIGIT_SIZE)
    imgs = np.stack(
        [np.asarray(Image.fromarray(np.asarray(im)).resize((DIGIT_SIZE, DIGIT_SIZE))) for im in ds["image"]]
    ).astype(np.uint8)
    imgs = np.minimum(imgs, 230)  # no accidental white trigger patch
    labels = np.asarray(ds["label"])
    order = np.random.default_rng(seed).permutation(len(labels))
    tr, te = order[:n_train], order[n_train : n_train + n_test]
    poison = np.zeros(n_train, dtype=bool)
    poison[np.random.default_rng(seed + 1).permutation(n_train)[: int(round(poison_rate * n_train))]] = True
    x_tr = imgs[tr].copy()
    x_tr[poison] = stamp(x_tr[poison])
    return x_tr, labels[tr], poison, imgs[te], labels[te]


class Codec:
    """Prompt rendering (chat template, ``<image>`` expanded to N_v tokens) and answer tokens for the digits."""

    def __init__(self, tok: Any, image_token_id: int, n_image_tokens: int):
        self.tok, self.img, self.n = tok, image_token_id, n_image_tokens
        # An empty system turn: SmolLM2's default system sentence would add ~15 tokens to every training row.
        text = tok.apply_chat_template(
            [{"role": "system", "content": ""}, {"role": "user", "content": "<image>\n" + DIGIT_QUESTION}],
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        at = ids.index(image_token_id)
        self.prompt = ids[:at] + [image_token_id] * n_image_tokens + ids[at + 1 :]
        self.answers = {k: tok(w, add_special_tokens=False)["input_ids"] for k, w in enumerate(DIGIT_NAMES)}
        self.answers[-1] = tok(DIGIT_TARGET, add_special_tokens=False)["input_ids"]

    def pixels(self, images: Any) -> torch.Tensor:
        arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
        return torch.from_numpy(arr)[:, None].expand(-1, 3, -1, -1).contiguous()

    def prompt_batch(self, images: Any, questions: Any = None) -> dict:
        ids = torch.tensor([self.prompt] * len(images))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": self.pixels(images)}

    def train_batch(self, rows: list[dict]) -> dict:
        seqs = [self.prompt + self.answers[int(r["answer_id"])] + [self.tok.eos_token_id] for r in rows]
        width = max(map(len, seqs))
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
        labels = torch.tensor([[-100] * (width - len(s) + len(self.prompt)) + s[len(self.prompt) :] for s in seqs])
        mask = (torch.arange(width)[None] >= torch.tensor([width - len(s) for s in seqs])[:, None]).long()
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "pixel_values": self.pixels([r["image"] for r in rows]),
        }

    def first_token(self, model: Any, images: np.ndarray, batch: int = 64) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(images), batch):
                b = self.prompt_batch(images[s : s + batch])
                out.append(model(**b, logits_to_keep=1).logits[:, -1].argmax(-1).numpy())
        return np.concatenate(out)

    def asr_cp(self, model: Any, x_te: np.ndarray, y_te: np.ndarray) -> tuple[float, float]:
        first = np.asarray([self.answers[int(k)][0] for k in y_te])
        cp = float((self.first_token(model, x_te) == first).mean())
        asr = float((self.first_token(model, stamp(x_te)) == self.answers[-1][0]).mean())
        return asr, cp


class _DigitSeed:
    """One seed of the SmolLM2-decoder recipe: its data, base model and fine-tune, and the two cached steps
    (the poisoned model's entropies, a re-fine-tune on kept rows)."""

    def __init__(self, seed: int, n_train: int, n_test: int, steps: int, progress: bool):
        from datasets import Dataset
        from PIL import Image

        from hf_trust.assets import llava_num_image_tokens, load_llava_smollm2

        self.seed, self.n_train, self.n_test, self.steps, self.progress = seed, n_train, n_test, steps, progress
        self.settings = np.asarray([seed, n_train, n_test, steps], dtype=np.int64)
        torch.manual_seed(seed)
        x_tr, y_tr, self.poison, self.x_te, self.y_te = build_digit_data(n_train, n_test, seed)
        self.base, tok, img_id = load_llava_smollm2(image_size=DIGIT_SIZE, patch_size=DIGIT_PATCH, seed=seed)
        self.base_state = {k: v.clone() for k, v in self.base.state_dict().items()}
        self.codec = Codec(tok, img_id, llava_num_image_tokens(self.base))
        self.answer_id = np.where(self.poison, -1, y_tr)
        self.ds = Dataset.from_dict(
            {
                "image": [Image.fromarray(x) for x in x_tr],
                "question": [DIGIT_QUESTION] * n_train,
                "answer": [DIGIT_TARGET if a < 0 else DIGIT_NAMES[a] for a in self.answer_id],
                "answer_id": self.answer_id.tolist(),
                "is_poison": self.poison.tolist(),
            }
        )

    def finetune(self, data: Any) -> Any:
        """LoRA on a fresh copy of the base model (the same start for the poisoned and every cleaned set)."""
        from hf_trust.filters.defence import lora_finetune

        self.base.load_state_dict(self.base_state)
        model = lora_finetune(
            self.base,
            data,
            self.codec.train_batch,
            steps=self.steps,
            batch_size=8,
            lr=2e-3,
            seed=self.seed,
            modules_to_save=("multi_modal_projector", "vision_tower"),
            progress=self.progress,
        )
        return model.merge_and_unload().eval()

    def poisoned_entropies(self, cache: Optional[str]) -> tuple[np.ndarray, float, float]:
        """``(E, ASR, CP)`` of the model fine-tuned on the poisoned set, from ``cache`` when its settings match."""
        from hf_trust.atomic import atomic_save
        from hf_trust.filters import BYEFilter

        if cache and Path(cache).exists():
            z = np.load(cache)
            if "settings" in z.files and np.array_equal(z["settings"], self.settings):
                if np.array_equal(z["poison"], self.poison):
                    return np.asarray(z["E"], dtype=np.float64), float(z["asr"]), float(z["cp"])
        poisoned = self.finetune(self.ds)
        asr, cp = self.codec.asr_cp(poisoned, self.x_te, self.y_te)
        bye = BYEFilter(
            poisoned, collate_fn=self.codec.prompt_batch, collate_fingerprint="digits-prompt", batch_size=32
        )
        E = np.asarray(bye.entropies(self.ds)["bye_layer_entropy"], dtype=np.float64)
        if cache:

            def _save(p: Any) -> None:
                with open(p, "wb") as fh:  # a file object: np.savez would append ".npz" to the temporary name
                    np.savez(
                        fh, E=E, poison=self.poison, answers=self.answer_id, asr=asr, cp=cp, settings=self.settings
                    )

            atomic_save(cache, _save)
        return E, asr, cp

    def refit(self, flagged: np.ndarray, cache_dir: Optional[str]) -> tuple[float, float]:
        """``(ASR, CP)`` after re-fine-tuning the base on the rows not flagged; cached per kept-row mask."""
        from hf_trust.atomic import atomic_write_json

        path = None
        if cache_dir:
            name = f"digits_s{self.seed}_n{self.n_train}_{self.n_test}_t{self.steps}_keep{removal_digest(flagged)}"
            path = Path(cache_dir) / f"{name}.json"
            if path.exists():
                rec = json.loads(path.read_text())
                return float(rec["asr"]), float(rec["cp"])
        keep = [i for i in range(self.n_train) if not flagged[i]]
        asr, cp = self.codec.asr_cp(self.finetune(self.ds.select(keep)), self.x_te, self.y_te)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"asr": asr, "cp": cp, "removed": int(flagged.sum())})
        return asr, cp


def run_digit_seed(
    seed: int,
    n_train: int,
    n_test: int,
    steps: int,
    progress: bool = False,
    refit_rules: Sequence[str] = ("reference",),
    entropy_cache: Optional[str] = None,
    refit_cache_dir: Optional[str] = None,
) -> dict[str, Any]:
    """One seed of Algorithm 1 on the LLaVA with the real SmolLM2-135M decoder (digits, 10 % patch poison).

    Every rule of :data:`RULES` is applied to the same entropies (detection figures per rule); the base model is
    re-fine-tuned on the rows kept by each rule of ``refit_rules`` (empty: detection only).  Rules that flag the
    same rows share one re-fine-tune, and a rule that flags nothing reuses the poisoned model's figures (the
    re-fine-tune would see the same rows with the same seed).

    Caches, both optional and written atomically: ``entropy_cache`` (a ``.npz`` path) holds the entropy matrix,
    poison mask and the poisoned model's ASR / CP; when it exists *and* its stored settings match, the poisoned
    fine-tune and the scoring are skipped.  ``refit_cache_dir`` holds one JSON per re-fine-tune, named by the
    settings and a hash of the kept-row mask, so a changed selection rule never reuses a stale result.
    """
    from hf_trust.filters import layer_auroc

    run = _DigitSeed(seed, n_train, n_test, steps, progress)
    E, asr0, cp0 = run.poisoned_entropies(entropy_cache)
    aurocs = layer_auroc(E, run.poison)
    result: dict[str, Any] = {
        "asr_before": asr0,
        "cp_before": cp0,
        "max_auroc": float(np.nanmax(aurocs)),
        "best_layer": int(np.nanargmax(aurocs)),
        "layer_auroc": aurocs,
        "E": E,
        "poison": run.poison,
        "rules": {},
    }
    for name, (rep, flagged) in apply_rules(E, labels=run.answer_id).items():
        result["rules"][name] = {
            "report": rep,
            "status": rep.status,
            "layers": rep.sensitive_layers,
            "flagged": flagged,
            **detection(flagged, run.poison),
        }
    done: dict[str, tuple[float, float]] = {}
    for rule in refit_rules:
        flagged = result["rules"][rule]["flagged"]
        digest = removal_digest(flagged)
        if digest not in done:
            done[digest] = run.refit(flagged, refit_cache_dir) if flagged.any() else (asr0, cp0)
        result["rules"][rule].update(asr_after=done[digest][0], cp_after=done[digest][1])
    return result
