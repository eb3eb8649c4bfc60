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

from typing import Any, Optional

import numpy as np
import torch

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
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}.")
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
    from datasets import Dataset
    from PIL import Image

    imgs, answers, poison = make_images(n, poison_rate, seed, task, trigger)
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
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
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
    ds = make_dataset(n, poison_rate, seed, trigger=trigger)
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


RULES: dict[str, dict[str, Any]] = {
    "reference": {"layer_select": "bimodal"},
    "bsi2": {"layer_select": "bsi"},
    "top_kl:1": {"layer_select": "top_kl:1"},
    "robust": {"layer_select": "robust"},
}


def apply_rules(E: np.ndarray, rules: Optional[dict[str, dict[str, Any]]] = None) -> dict[str, Any]:
    """Run each selection rule on one entropy matrix; ``{rule: (report, flagged)}`` (warnings silenced)."""
    import warnings

    from hf_trust.filters import bye_select

    out = {}
    for name, kwargs in (rules or RULES).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep, _ = bye_select(E, **kwargs)
        out[name] = (rep, np.asarray(rep.suspicious, dtype=bool))
    return out
