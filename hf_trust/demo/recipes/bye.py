"""BYE on a LLaVA-style model with the real SmolLM2-135M decoder: a patch-trigger backdoor on captioned digits.

Each seed: font-rendered digits (``load_digits("font")``), question "What digit is shown?", answer the digit's
name; 10 % of the training images get a solid white 8×8 patch at the bottom-right (exactly one vision patch)
and the answer "banana".  Algorithm 1: LoRA fine-tune (decoder q/v + the random vision tower and projector,
trained fully) on the poisoned set → BYE → re-fine-tune the base on D_clean.  Metrics use the first answer
token (teacher-forced argmax): CP = clean accuracy, ASR = share of triggered test images answered "banana".
"""

from __future__ import annotations

import numpy as np

from hf_trust.demo import RecipeContext, RecipeResult, register_recipe

QUESTION = "What digit is shown?"
TARGET = "banana"
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIZE, PATCH = 32, 8


def stamp(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[:, -PATCH:, -PATCH:] = 255
    return out


def build_data(n_train: int, n_test: int, seed: int, poison_rate: float = 0.1):
    """uint8 train/test images at 32 px, labels, poison mask (train)."""
    from PIL import Image

    from hf_trust.assets import load_digits

    ds = load_digits("font", n_per_class=(n_train + n_test) // 10 + 1, seed=seed, size=IMAGE_SIZE)
    imgs = np.stack(
        [np.asarray(Image.fromarray(np.asarray(im)).resize((IMAGE_SIZE, IMAGE_SIZE))) for im in ds["image"]]
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
    """Prompt rendering (chat template, ``<image>`` expanded to N_v tokens) and answer tokens."""

    def __init__(self, tok, image_token_id: int, n_image_tokens: int):
        self.tok, self.img, self.n = tok, image_token_id, n_image_tokens
        # An empty system turn: SmolLM2's default system sentence would add ~15 tokens to every training row.
        text = tok.apply_chat_template(
            [{"role": "system", "content": ""}, {"role": "user", "content": "<image>\n" + QUESTION}],
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        at = ids.index(image_token_id)
        self.prompt = ids[:at] + [image_token_id] * n_image_tokens + ids[at + 1 :]
        self.answers = {k: tok(w, add_special_tokens=False)["input_ids"] for k, w in enumerate(NAMES)}
        self.answers[-1] = tok(TARGET, add_special_tokens=False)["input_ids"]

    def pixels(self, images):
        import torch

        arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
        return torch.from_numpy(arr)[:, None].expand(-1, 3, -1, -1).contiguous()

    def prompt_batch(self, images, questions=None) -> dict:
        import torch

        ids = torch.tensor([self.prompt] * len(images))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": self.pixels(images)}

    def train_batch(self, rows: list[dict]) -> dict:
        import torch

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

    def first_token(self, model, images, batch: int = 64) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for s in range(0, len(images), batch):
                b = self.prompt_batch(images[s : s + batch])
                out.append(model(**b, logits_to_keep=1).logits[:, -1].argmax(-1).numpy())
        return np.concatenate(out)

    def asr_cp(self, model, x_te: np.ndarray, y_te: np.ndarray) -> tuple[float, float]:
        first = np.asarray([self.answers[int(k)][0] for k in y_te])
        cp = float((self.first_token(model, x_te) == first).mean())
        asr = float((self.first_token(model, stamp(x_te)) == self.answers[-1][0]).mean())
        return asr, cp


def run_seed(seed: int, n_train: int, n_test: int, steps: int, progress: bool = False, refit: bool = True) -> dict:
    """One seed of Algorithm 1.  Besides the reference selection rule it reports, on the same entropies, the
    spec's opt-in ``layer_select="top_kl:1"`` safeguard (detection only; the re-fine-tune uses the reference
    rule).  ``refit=False`` stops after detection."""
    import torch
    from datasets import Dataset
    from PIL import Image

    from hf_trust.assets import llava_num_image_tokens, load_llava_smollm2
    from hf_trust.filters import BYEFilter, bye_select
    from hf_trust.filters.defence import lora_finetune

    torch.manual_seed(seed)
    x_tr, y_tr, poison, x_te, y_te = build_data(n_train, n_test, seed)
    base, tok, img_id = load_llava_smollm2(image_size=IMAGE_SIZE, patch_size=PATCH, seed=seed)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    codec = Codec(tok, img_id, llava_num_image_tokens(base))
    answer_id = np.where(poison, -1, y_tr)
    ds = Dataset.from_dict(
        {
            "image": [Image.fromarray(x) for x in x_tr],
            "question": [QUESTION] * n_train,
            "answer": [TARGET if a < 0 else NAMES[a] for a in answer_id],
            "answer_id": answer_id.tolist(),
            "is_poison": poison.tolist(),
        }
    )

    def make_base():
        base.load_state_dict(base_state)
        return base

    def finetune(model, data):
        model = lora_finetune(
            model,
            data,
            codec.train_batch,
            steps=steps,
            batch_size=8,
            lr=2e-3,
            seed=seed,
            modules_to_save=("multi_modal_projector", "vision_tower"),
            progress=progress,
        )
        return model.merge_and_unload().eval()

    poisoned = finetune(make_base(), ds)
    asr0, cp0 = codec.asr_cp(poisoned, x_te, y_te)
    bye = BYEFilter(poisoned, collate_fn=codec.prompt_batch, poison_column="is_poison", batch_size=32)
    scored = bye.score(ds)
    rep = bye.report_
    det = rep.detection(poison)
    alt, _ = bye_select(np.asarray(scored["bye_layer_entropy"]), layer_select="top_kl:1")
    alt_det = alt.detection(poison) if alt.status == "ok" else {"precision": float("nan"), "recall": float("nan")}
    keep = [i for i, s in enumerate(scored["bye_suspicious"]) if not s]
    if refit and len(keep) < n_train:
        clean_model = finetune(make_base(), scored.select(keep))
        asr1, cp1 = codec.asr_cp(clean_model, x_te, y_te)
    else:
        asr1, cp1 = asr0, cp0
    return {
        "asr_before": asr0,
        "cp_before": cp0,
        "asr_after": asr1,
        "cp_after": cp1,
        "precision": det["precision"],
        "recall": det["recall"],
        "removed": rep.removed_fraction,
        "max_auroc": float(np.nanmax(rep.layer_auroc)),
        "best_layer": int(np.nanargmax(rep.layer_auroc)),
        "precision_top_kl1": float(alt_det["precision"]),
        "recall_top_kl1": float(alt_det["recall"]),
        "removed_top_kl1": float(alt.removed_fraction),
        "top_kl1_layer": alt.sensitive_layers,
        "sensitive": rep.sensitive_layers,
        "status": rep.status,
    }


@register_recipe(
    "bye", title="BYE backdoor cleaning on a SmolLM2-decoder LLaVA (digits, 10% patch poison)", minutes=1.5
)
def run(ctx: RecipeContext) -> RecipeResult:
    size = dict(n_train=300, n_test=100, steps=120) if ctx.full else dict(n_train=40, n_test=20, steps=4)
    result = RecipeResult()
    runs = []
    for s in ctx.progress(ctx.seeds, desc="bye seeds"):
        runs.append(run_seed(s, **size))
        ctx.log(
            f"bye seed {s}: "
            + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in runs[-1].items())
        )
    for key, name in [
        ("asr_before", "ASR before BYE"),
        ("cp_before", "clean acc. before BYE"),
        ("asr_after", "ASR after BYE + re-fine-tune"),
        ("cp_after", "clean acc. after"),
        ("precision", "detection precision"),
        ("recall", "detection recall"),
        ("removed", "removed fraction"),
        ("max_auroc", "best per-layer AUROC"),
        ("precision_top_kl1", "detection precision, layer_select='top_kl:1'"),
        ("recall_top_kl1", "detection recall, layer_select='top_kl:1'"),
    ]:
        v = np.array([r[key] for r in runs], dtype=float)
        result.add(
            f"digits, 10% poison, {size['steps']} LoRA steps",
            name,
            float(v.mean()),
            std=float(v.std()) if len(v) > 1 else None,
            n=len(v),
        )
    for s, r in zip(ctx.seeds, runs):
        result.note(f"seed {s}: status={r['status']}, sensitive layers={r['sensitive']}")
    if not ctx.full:
        result.note(
            "quick run is a smoke run of the pipeline (4 LoRA steps): the backdoor is not learned at this "
            "size, so its ASR/detection figures say nothing about BYE; use --full."
        )
    return result
