"""A tiny CLIP, a word-level stand-in tokenizer and a small image dataset for the FPL tests."""

from __future__ import annotations

import torch

WORDS = ["a", "photo", "of", "X", "."] + [f"c{i}" for i in range(4)]
BOS, EOS, PAD = 97, 98, 99


class WordTokenizer:
    """Whitespace tokenizer with CLIP's special-token attributes (``.`` is its own word)."""

    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, PAD

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        words = text.replace(".", " . ").split()
        return {"input_ids": [WORDS.index(w) + 1 for w in words]}


def make_tiny_clip(text_layers: int = 3, vision_layers: int = 2, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            max_position_embeddings=24,
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=PAD,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            image_size=16,
            patch_size=4,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    return CLIPModel(cfg).eval()


CLASS_NAMES = [f"c{i}" for i in range(4)]


def make_image_dataset(n: int = 48, seed: int = 0):
    """Images whose mean brightness pattern depends on the label, as a ``datasets.Dataset`` (torch format)."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = torch.randn(n, 3, 16, 16, generator=g) * 0.5
    x[:, labels % 3, :8] += labels.view(-1, 1, 1).float()  # class-dependent pattern
    ds = Dataset.from_dict(
        {"pixel_values": x.numpy(), "label": labels.tolist(), "domain": ["a" if i % 2 else "b" for i in range(n)]}
    )
    return ds.with_format("torch")
