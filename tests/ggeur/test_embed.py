"""embed_dataset with a transformers CLIP (get_image_features → pooler_output) and with a callable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import CLIPConfig, CLIPModel

from hf_trust.errors import HFTrustConfigError, HFTrustDataError, HFTrustTypeError
from hf_trust.trainers.ggeur import embed_dataset


def _images(n=6, size=16):
    rng = np.random.default_rng(0)
    return Dataset.from_dict(
        {"image": rng.normal(size=(n, 3, size, size)).astype(np.float32).tolist(), "label": list(range(n))}
    )


def test_clip_image_features_are_cached_with_an_explicit_fingerprint():
    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "vocab_size": 100,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "image_size": 16,
                "patch_size": 8,
            },
            projection_dim=12,
        )
    )
    ds = _images()
    emb = embed_dataset(clip, ds, batch_size=4)
    assert emb.column_names == ["embedding", "label"] and emb["label"] == list(range(6))
    with torch.no_grad():
        direct = clip.get_image_features(pixel_values=torch.tensor(ds["image"]))
        direct = direct.pooler_output if hasattr(direct, "pooler_output") else direct
    np.testing.assert_allclose(np.stack(emb["embedding"]), direct.numpy(), atol=1e-5)
    assert emb._fingerprint == embed_dataset(clip, ds, batch_size=3)._fingerprint  # the model is never hashed
    assert embed_dataset(clip, ds, fingerprint="mine")._fingerprint == "mine"
    # the default fingerprint covers every setting that changes the rows: another input, L2 normalisation
    # or image column gives another key
    other = Dataset.from_dict({"pixels": ds["image"], "label": ds["label"]})
    keys = {
        emb._fingerprint,
        embed_dataset(clip, ds.select(range(5)))._fingerprint,
        embed_dataset(clip, ds, normalize=True)._fingerprint,
        embed_dataset(clip, other, image_column="pixels")._fingerprint,
    }
    assert len(keys) == 4
    norm = embed_dataset(clip, ds, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(np.stack(norm["embedding"]), axis=1), 1.0, atol=1e-5)


def test_callable_encoder_and_errors():
    ds = _images()
    emb = embed_dataset(lambda x: x.flatten(1)[:, :5], ds, batch_size=4)
    assert np.stack(emb["embedding"]).shape == (6, 5)
    with pytest.raises(HFTrustDataError, match="empty"):
        embed_dataset(lambda x: x, ds.select([]))
    with pytest.raises(HFTrustConfigError, match="column 'pixels' not found.*pass image_column="):
        embed_dataset(lambda x: x, ds, image_column="pixels")
    with pytest.raises(HFTrustTypeError, match=r"\(batch, dim\)"):
        embed_dataset(lambda x: x, ds)
