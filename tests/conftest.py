"""Shared fixtures.  Every test runs single-threaded and offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# On a 2-core machine two intra-op threads made small ops ~50x slower than one.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def make_tiny_llama(vocab_size: int = 128, hidden_size: int = 32, layers: int = 2, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **kw,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def make_tiny_gpt2(vocab_size: int = 128, n_embd: int = 32, layers: int = 2, **kw):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_embd=n_embd, n_layer=layers, n_head=4, n_positions=256, **kw)
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture
def tiny_gpt2():
    return make_tiny_gpt2()
