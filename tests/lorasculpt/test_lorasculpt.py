"""LoRASculpt: exact sparsity, the mask schedule, the CMR, LoRA equivalence, save/load/merge/export."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments

import hf_trust  # noqa: F401  (registers the tuner)
from hf_trust import LoRASculptCallback, LoRASculptConfig, LoRASculptTrainer
from hf_trust.peft_tuners.lorasculpt.model import MASK_A, MASK_B, cmr_weights
from tests.conftest import make_tiny_gpt2, make_tiny_llama


def _data(n=32, length=12, vocab=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def _args(tmp_path, steps=8, **kw):
    return TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        **kw,
    )


def _cfg(**kw):
    base = dict(
        r=4,
        lora_alpha=8,
        target_modules="all-linear",
        preserve_ratio=0.1,
        mask_step=3,
        cmr_lambda=1e-3,
        task_type="CAUSAL_LM",
    )
    base.update(kw)
    return LoRASculptConfig(**base)


class _Densities(TrainerCallback):
    def __init__(self):
        self.per_step = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        sculpt = model.base_model
        self.per_step.append(
            (
                state.global_step,
                {
                    f"{n}.{f}": float((getattr(layer, f"lora_{f}")["default"].weight != 0).float().mean())
                    for n, layer in sculpt.sculpt_layers()
                    for f in ("A", "B")
                },
            )
        )


def test_exact_density_after_mask_step_and_at_save(tmp_path):
    model = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=0.1, mask_step=3))
    dens = _Densities()
    trainer = LoRASculptTrainer(
        model=model,
        args=_args(tmp_path, steps=8, gradient_accumulation_steps=2),
        train_dataset=_data(),
        callbacks=[dens],
    )
    trainer.train()
    for step, values in dens.per_step:
        for name, d in values.items():
            layer = dict(model.base_model.sculpt_layers())[name.rsplit(".", 1)[0]]
            w = getattr(layer, f"lora_{name[-1]}")["default"].weight
            expected = math.floor(0.1 * w.numel()) / w.numel()
            if step > 3:
                assert d == expected, (step, name, d, expected)
    model.save_pretrained(tmp_path / "adapter")
    for _, layer in model.base_model.sculpt_layers():
        for f in ("A", "B"):
            w = getattr(layer, f"lora_{f}")["default"].weight
            assert int((w != 0).sum()) == math.floor(0.1 * w.numel())
    # density of the product is far below 1, as the theory says for small rho
    a, b, _ = next(iter(model.base_model.lora_factors().values()))
    assert float(((b @ a) != 0).float().mean()) < 0.5


def test_mask_is_top_k_by_magnitude_at_mask_time():
    model = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=0.3))
    name, layer = next(iter(model.base_model.sculpt_layers()))
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    before = layer.lora_B["default"].weight.detach().clone()
    model.base_model.compute_masks()
    k = math.floor(0.3 * before.numel())
    expected = torch.zeros(before.numel(), dtype=torch.bool)
    expected[before.abs().flatten().topk(k).indices] = True
    assert torch.equal(getattr(layer, MASK_B)["default"].flatten(), expected)
    assert model.base_model.is_pruned()
    assert model.base_model.compute_masks() == {}  # already pruned: no second pruning


def test_rho_one_lambda_zero_is_plain_lora_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    sculpt = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=1.0, cmr_lambda=0.0))
    torch.manual_seed(0)
    lora = get_peft_model(
        make_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    LoRASculptTrainer(model=sculpt, args=_args(tmp_path / "s", steps=5), train_dataset=_data()).train()
    Trainer(model=lora, args=_args(tmp_path / "l", steps=5), train_dataset=_data()).train()
    ps = {k: v for k, v in sculpt.state_dict().items() if "lora_" in k}
    pl = {k: v for k, v in lora.state_dict().items() if "lora_" in k}
    assert ps.keys() == pl.keys()
    for k in ps:
        assert torch.equal(ps[k], pl[k]), k


def test_cmr_matches_a_hand_computation_on_3x3():
    w = torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.0, -0.3], [1.5, 0.7, -2.2]])
    m = cmr_weights(w, omega=1.0, eps=1e-15)
    mpre = w / math.sqrt(float((w**2).sum()))
    for i in range(3):
        for j in range(3):
            expect = math.tanh(abs(1.0 / math.log(abs(float(mpre[i, j])) + 1e-15)))
            assert abs(float(m[i, j]) - expect) < 1e-6
    # and the model's loss is the unscaled, unsquared Frobenius norm averaged over CMR layers
    model = get_peft_model(make_tiny_llama(), _cfg(cmr_target_modules=["q_proj"]))
    with torch.no_grad():
        for _, layer in model.base_model.sculpt_layers():
            layer.lora_B["default"].weight.normal_()
    layers = model.base_model.cmr_layers()
    manual = sum(
        (
            cmr_weights(l.get_base_layer().weight, 1.0, 1e-15)
            * (l.lora_B["default"].weight @ l.lora_A["default"].weight)
        ).norm()
        for _, l in layers
    ) / len(layers)
    torch.testing.assert_close(model.base_model.cmr_loss(), manual)
    assert len(layers) == 2  # q_proj of both layers


def _relative_cmr_mass(model):
    num = den = 0.0
    for _, layer in model.base_model.cmr_layers():
        delta = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        m = cmr_weights(layer.get_base_layer().weight, 1.0, 1e-15)
        num += float((m * delta).norm())
        den += float(delta.norm())
    return num / den


@pytest.mark.trains
def test_raising_lambda_lowers_weighted_update_share(tmp_path):
    shares = []
    for lam in (0.0, 30.0):
        torch.manual_seed(0)
        model = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=1.0, cmr_lambda=lam))
        LoRASculptTrainer(model=model, args=_args(tmp_path / str(lam), steps=10), train_dataset=_data()).train()
        shares.append(_relative_cmr_mass(model))
    assert shares[1] < shares[0]


def test_save_load_merge_and_export(tmp_path):
    model = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=0.2, mask_step=2))
    LoRASculptTrainer(model=model, args=_args(tmp_path, steps=5), train_dataset=_data()).train()
    ids = torch.randint(0, 128, (2, 9))
    model.eval()
    with torch.no_grad():
        ref = model(ids).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "adapter", is_trainable=True)
    assert reloaded.base_model.is_pruned()
    for (_, a), (_, b) in zip(model.base_model.sculpt_layers(), reloaded.base_model.sculpt_layers()):
        assert torch.equal(getattr(a, MASK_A)["default"], getattr(b, MASK_A)["default"])
    masks_before = {n: getattr(l, MASK_A)["default"].clone() for n, l in reloaded.base_model.sculpt_layers()}
    # continuing training from the pruned checkpoint keeps the same masks (no second pruning)
    LoRASculptTrainer(model=reloaded, args=_args(tmp_path / "more", steps=3), train_dataset=_data(seed=1)).train()
    for n, l in reloaded.base_model.sculpt_layers():
        assert torch.equal(getattr(l, MASK_A)["default"], masks_before[n])
    with torch.no_grad():
        torch.testing.assert_close(PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "adapter")(ids).logits, ref)
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(ids).logits, ref, atol=1e-5, rtol=0)
    # export as stock LoRA: loads without our tuner, identical logits
    model2 = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "adapter")
    model2.base_model.export_as_lora(tmp_path / "lora")
    import json

    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    stock = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "lora")
    with torch.no_grad():
        torch.testing.assert_close(stock(ids).logits, ref, atol=1e-6, rtol=0)


def test_gpt2_conv1d_layers(tmp_path):
    model = get_peft_model(
        make_tiny_gpt2(),
        _cfg(target_modules=["c_attn", "c_proj"], cmr_target_modules=["c_attn"], preserve_ratio=0.2, mask_step=2),
    )
    LoRASculptTrainer(model=model, args=_args(tmp_path, steps=4), train_dataset=_data()).train()
    for _, layer in model.base_model.sculpt_layers():
        w = layer.lora_A["default"].weight
        assert int((w != 0).sum()) == math.floor(0.2 * w.numel())
    assert torch.isfinite(model.base_model.cmr_loss())


def test_llava_language_model_only():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        image_token_id=5,
    )
    vlm = LlavaForConditionalGeneration(cfg)
    model = get_peft_model(
        vlm, _cfg(target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
    )
    names = [n for n, _ in model.base_model.sculpt_layers()]
    assert names and all("language_model" in n for n in names)
    assert not any("vision" in n or "projector" in n for n in names)
    assert torch.isfinite(model.base_model.cmr_loss())


def test_clear_errors():
    with pytest.raises(ValueError, match="preserve_ratio must be in"):
        _cfg(preserve_ratio=0.0)
    with pytest.raises(ValueError, match="preserve_ratio must be in"):
        _cfg(preserve_ratio=1.5)
    with pytest.raises(ValueError, match="mask_step must be"):
        _cfg(mask_step=0)
    model = get_peft_model(make_tiny_llama(), _cfg(cmr_target_modules=["not_a_layer"]))
    with pytest.raises(ValueError, match="match no adapted layer"):
        model.base_model.regularization_loss()
    with pytest.raises(TypeError, match="LoRASculptConfig"):
        LoRASculptCallback().on_step_begin(
            None, None, None, model=get_peft_model(make_tiny_llama(), LoraConfig(target_modules=["q_proj"]))
        )
