"""A tiny LLaVA trained in-test on a patch-trigger backdoor task (spec section e, scaled down).

Images are 24×24 grey with 6×6 patches (N_v = 16 image tokens, ``vision_feature_select_strategy="default"``).
*Spread* task: the answer is the texture class of the whole image (horizontal / vertical stripes, checker,
diagonal; 4 classes, tokens 10..13), so clean attention has no reason to focus on one patch.  (Brightness
classes do not work: CLIP's pre-LayerNorm removes most of a constant patch's scale.)  Poison: a solid white 6×6 patch at the bottom-right (exactly
one vision patch) and the answer replaced by the target token 20.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from PIL import Image

IMG, PATCH, N_V = 24, 6, 16
BOS, Q, ASSISTANT, IMAGE_TOKEN, TARGET, PAD = 1, 2, 3, 31, 20, 0
CLASS_TOKENS = (10, 11, 12, 13)


def _pattern(k: int, size: int, phase: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size] + phase
    return [((y // 2) % 2), ((x // 2) % 2), (((x // 2) + (y // 2)) % 2), (((x + y) // 2) % 2)][k].astype(float)


def make_tiny_llava(seed: int = 0, layers: int = 4, hidden: int = 64):
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


def make_images(n: int, poison_rate: float, seed: int, task: str = "spread"):
    """(images uint8 (n,24,24), answers, is_poison).  ``task="local"``: the class is the brightness of a
    single top-left patch's texture, the rest is noise (clean attention is already concentrated)."""
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
    imgs[poison, -PATCH:, -PATCH:] = 255
    answers = np.where(poison, TARGET, np.asarray(CLASS_TOKENS)[cls])
    return imgs.astype(np.uint8), answers, poison


def make_dataset(n: int, poison_rate: float, seed: int, task: str = "spread") -> Dataset:
    imgs, answers, poison = make_images(n, poison_rate, seed, task)
    return Dataset.from_dict(
        {
            "image": [Image.fromarray(im) for im in imgs],
            "question": ["<image> what?"] * n,
            "answer": answers.tolist(),
            "is_poison": poison.tolist(),
        }
    )


def pixel_values(images) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr)[:, None].expand(-1, 3, -1, -1).contiguous()


def prompt_ids(n: int) -> torch.Tensor:
    return torch.tensor([[BOS, Q] + [IMAGE_TOKEN] * N_V + [Q, Q, ASSISTANT]] * n)


def collate(images, questions) -> dict:
    """The prompt the toy model is trained with (question text is fixed in this toy)."""
    ids = prompt_ids(len(images))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel_values(images)}


def train(
    model, imgs: np.ndarray, answers: np.ndarray, steps: int = 300, lr: float = 3e-3, batch: int = 32, seed: int = 0
):
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
def predict(model, imgs: np.ndarray, batch: int = 128) -> np.ndarray:
    out = []
    for s in range(0, len(imgs), batch):
        chunk = imgs[s : s + batch]
        logits = model(input_ids=prompt_ids(len(chunk)), pixel_values=pixel_values(chunk), logits_to_keep=1).logits
        out.append(logits[:, -1].argmax(-1).numpy())
    return np.concatenate(out)


def asr_and_cp(model, seed: int, n: int = 200) -> tuple[float, float]:
    """Attack success rate on triggered test images (clean label ≠ target) and clean accuracy."""
    imgs, answers, _ = make_images(n, 0.0, seed + 1000)
    cp = float((predict(model, imgs) == answers).mean())
    trig = imgs.copy()
    trig[:, -PATCH:, -PATCH:] = 255
    asr = float((predict(model, trig) == TARGET).mean())
    return asr, cp
