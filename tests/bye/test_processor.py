"""The ``processor`` input path: an HF ``LlavaProcessor`` (chat template, ``<image>`` expansion, image
processor, left padding) gives the same entropies as explicit model inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image

from hf_trust.filters import BYEFilter

from . import toy

WORDS = {"what": 4, "is": 5, "this": 6, "?": 7, "shown": 9}
QUESTIONS = ["what is this ?", "what ?", "<image> what is shown ?", "this ?"]


@pytest.fixture(scope="module")
def processor():
    return make_processor()


def make_processor(template: str | None = None):
    """A real LlavaProcessor built offline: in-memory word-level tokenizer + CLIP image processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    vocab = {
        "<pad>": toy.PAD,
        "<s>": toy.BOS,
        "Q": toy.Q,
        "A": toy.ASSISTANT,
        "<unk>": 8,
        "<image>": toy.IMAGE_TOKEN,
        **WORDS,
    }
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    template = template or (
        "{% for m in messages %}{{ bos_token }}Q {% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<image> {% endif %}{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}"
        "{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}Q A"
    )
    images = CLIPImageProcessor(
        size={"shortest_edge": toy.IMG},
        crop_size={"height": toy.IMG, "width": toy.IMG},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=toy.PATCH,
        chat_template=template,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def explicit_inputs(images, questions) -> dict:
    """What the processor must produce: BOS Q <image>×N_v question-words Q A, left-padded."""
    rows = [
        [toy.BOS, toy.Q] + [toy.IMAGE_TOKEN] * toy.N_V + [WORDS[w] for w in q.split()] + [toy.Q, toy.ASSISTANT]
        for q in questions
    ]
    width = max(map(len, rows))
    ids = torch.tensor([[toy.PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": toy.pixel_values(images)}


@pytest.fixture(scope="module")
def ds():
    imgs, _, _ = toy.make_images(len(QUESTIONS), 0.0, 3)
    return Dataset.from_dict({"image": [Image.fromarray(i) for i in imgs], "question": QUESTIONS})


def test_processor_path_equals_explicit_inputs(processor, ds):
    model = toy.make_tiny_llava(0)
    via_proc = BYEFilter(model, processor, batch_size=len(ds)).entropies(ds)["bye_layer_entropy"]
    via_inputs = BYEFilter(model, collate_fn=explicit_inputs, batch_size=len(ds)).entropies(ds)["bye_layer_entropy"]
    assert np.asarray(via_proc).shape == (len(ds), 4)
    np.testing.assert_allclose(np.asarray(via_proc), np.asarray(via_inputs), atol=1e-6)


def test_processor_left_padding_matches_unpadded_rows(processor, ds):
    """Questions of different lengths in one batch score as if each row were alone."""
    model = toy.make_tiny_llava(1)
    batched = np.asarray(BYEFilter(model, processor, batch_size=len(ds)).entropies(ds)["bye_layer_entropy"])
    single = np.asarray(BYEFilter(model, processor, batch_size=1).entropies(ds)["bye_layer_entropy"])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert processor.tokenizer.padding_side == "right"  # the caller's setting is restored after each batch
