"""LoRASculpt under bad input and interrupted writes: clear errors, warnings where legal input is almost
surely a mistake, atomic export, truncated adapter files named."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer, TrainingArguments

from hf_trust import LoRASculptCallback, LoRASculptConfig, LoRASculptTrainer
from hf_trust.errors import HFTrustCacheError, HFTrustConfigError
from hf_trust.peft_tuners import _lora_export
from hf_trust.peft_tuners._lora_family import check_adapter_files
from tests.conftest import make_tiny_llama

TRAINING_HOOKS = "without its training hooks"


def _cfg(**kw) -> LoRASculptConfig:
    base = dict(r=4, lora_alpha=8, target_modules="all-linear", preserve_ratio=0.25, mask_step=2, task_type="CAUSAL_LM")
    base.update(kw)
    return LoRASculptConfig(**base)


def _data(n=16, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (n, length), generator=g).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def _args(tmp_path, steps):
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
        disable_tqdm=True,
    )


def _hook_warnings(record) -> list[str]:
    return [str(w.message) for w in record if TRAINING_HOOKS in str(w.message) or "mask_step" in str(w.message)]


# ---------------------------------------------------------------------------------------------- preserve_ratio
def test_preserve_ratio_that_keeps_no_entry_of_a_tensor_is_refused():
    # Smallest LoRA tensor of the tiny Llama at r=4: lora_B of k_proj/v_proj, 16 x 4 = 64 entries
    # (2 key/value heads of width 8), so floor(rho * 64) = 0 exactly when rho < 1/64.
    smallest = 4 * (2 * 32 // 4)
    base = make_tiny_llama()
    ids = torch.randint(0, 128, (2, 6))
    with torch.no_grad():
        before = base(ids).logits
    with pytest.raises(HFTrustConfigError, match=r"preserve_ratio=0.0001 keeps floor\(ρ·n\) = 0") as err:
        get_peft_model(base, _cfg(preserve_ratio=1e-4))
    # every one of the 2 layers x 7 modules x 2 factors is too small; the smallest is named
    assert "of 28 LoRA tensor(s)" in str(err.value) and f"n = {smallest}" in str(err.value)
    assert f"preserve_ratio ≥ {1 / smallest:.3g}" in str(err.value)
    # the caller's model is left without LoRA layers and computes what it computed before
    assert not any("lora_" in n for n, _ in base.named_modules())
    with torch.no_grad():
        torch.testing.assert_close(base(ids).logits, before, rtol=0, atol=0)
    # just below 1/64 only the four 64-entry tensors (lora_B of k_proj, v_proj in 2 layers) are refused
    with pytest.raises(HFTrustConfigError, match=r"of 4 LoRA tensor\(s\), the smallest being lora_B of .*k_proj"):
        get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=0.99 / smallest))
    # at the bound every tensor keeps at least one entry, and pruning keeps exactly floor(rho * n) of each
    model = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=1 / smallest))
    with torch.no_grad():
        for _, layer in model.base_model.sculpt_layers():
            layer.lora_B["default"].weight.normal_()
    model.base_model.compute_masks()
    for _, layer in model.base_model.sculpt_layers():
        for w in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
            assert int((w != 0).sum()) == math.floor(w.numel() / smallest) >= 1


# ---------------------------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize(
    "field, value",
    [
        ("cmr_lambda", float("nan")),
        ("cmr_lambda", float("inf")),
        ("cmr_lambda", -1e-3),
        ("cmr_omega", float("nan")),
        ("cmr_omega", 0.0),
        ("cmr_eps", float("-inf")),
        ("cmr_eps", -1.0),
        ("preserve_ratio", float("nan")),
        ("mask_step", True),
        ("mask_step", 2.5),
    ],
)
def test_non_finite_negative_or_mistyped_hyperparameters_are_refused(field, value):
    with pytest.raises(HFTrustConfigError, match=f"LoRASculptConfig.{field} must be"):
        _cfg(**{field: value})


def test_nan_lambda_would_otherwise_poison_the_loss():
    # Why the check matters: the regulariser is lambda * L_CMR, so a NaN lambda makes every loss NaN.
    model = get_peft_model(make_tiny_llama(), _cfg(cmr_lambda=1e-3))
    model.base_model.peft_config["default"].cmr_lambda = float("nan")  # bypassing validation on purpose
    assert torch.isnan(model.base_model.regularization_loss())


# ---------------------------------------------------------------------------------------------- mask_step vs run
@pytest.mark.parametrize("mask_step, expect_warning", [(4, True), (3, False)])
def test_mask_step_not_below_the_run_length_warns_and_leaves_the_adapter_dense(tmp_path, mask_step, expect_warning):
    model = get_peft_model(make_tiny_llama(), _cfg(mask_step=mask_step))
    trainer = LoRASculptTrainer(model=model, args=_args(tmp_path, steps=4), train_dataset=_data())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.train()
    got = [m for m in _hook_warnings(record) if "mask_step" in m]
    assert bool(got) is expect_warning, got
    # the warning is exactly the case where training ends unpruned
    assert model.base_model.is_pruned() is not expect_warning
    if expect_warning:
        assert "mask_step=4" in got[0] and "4 optimizer steps" in got[0]


# ---------------------------------------------------------------------------------------------- plain Trainer
def test_plain_trainer_warns_once_and_the_model_stays_dense(tmp_path):
    model = get_peft_model(make_tiny_llama(), _cfg(mask_step=1))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Trainer(model=model, args=_args(tmp_path / "plain", steps=4), train_dataset=_data()).train()
    got = [m for m in _hook_warnings(record) if TRAINING_HOOKS in m]
    assert len(got) == 1, got
    assert "LoRASculptTrainer" in got[0] and "masks are never computed" in got[0]
    assert "regularization_loss() not called" in got[0]
    assert not model.base_model.is_pruned()  # what the warning is about: no pruning happened


def test_callback_without_the_regulariser_warns_about_the_cmr_only(tmp_path):
    model = get_peft_model(make_tiny_llama(), _cfg(mask_step=1))
    trainer = Trainer(
        model=model, args=_args(tmp_path, steps=3), train_dataset=_data(), callbacks=[LoRASculptCallback()]
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.train()
    got = [m for m in _hook_warnings(record) if TRAINING_HOOKS in m]
    assert len(got) == 1 and "regularization_loss() not called" in got[0] and "masks" not in got[0], got
    assert model.base_model.is_pruned()


@pytest.mark.parametrize("how", ["sculpt_trainer", "callback_lambda0", "manual_loop", "lora_plain"])
def test_supported_training_paths_do_not_warn(tmp_path, how):
    if how == "lora_plain":
        model = get_peft_model(make_tiny_llama(), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    else:
        model = get_peft_model(
            make_tiny_llama(), _cfg(mask_step=1, cmr_lambda=0.0 if how == "callback_lambda0" else 1e-3)
        )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if how == "sculpt_trainer":
            LoRASculptTrainer(model=model, args=_args(tmp_path, steps=3), train_dataset=_data()).train()
        elif how in ("callback_lambda0", "lora_plain"):
            cbs = [LoRASculptCallback()] if how == "callback_lambda0" else []
            Trainer(model=model, args=_args(tmp_path, steps=3), train_dataset=_data(), callbacks=cbs).train()
        else:  # the loop documented in LoRASculptTrainer's docstring
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
            ids = torch.tensor(_data()["input_ids"][:4])
            model.train()
            for step in range(3):
                loss = model(input_ids=ids, labels=ids).loss + model.base_model.regularization_loss()
                loss.backward()
                opt.step()
                opt.zero_grad()
                model.base_model.apply_masks()
                if step + 1 == model.base_model._config().mask_step:
                    model.base_model.compute_masks()
    assert _hook_warnings(record) == []


def test_merged_model_keeps_no_guard():
    model = get_peft_model(make_tiny_llama(), _cfg())
    merged = model.merge_and_unload()
    assert len(merged._forward_pre_hooks) == 0
    merged.train()
    ids = torch.randint(0, 128, (2, 6))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            merged(input_ids=ids, labels=ids)
    assert _hook_warnings(record) == []


# ---------------------------------------------------------------------------------------------- atomic export
def _trained(tmp_path, seed=0):
    torch.manual_seed(seed)
    model = get_peft_model(make_tiny_llama(), _cfg(init_lora_weights=False))
    model.base_model.compute_masks()
    return model


def test_export_as_lora_writes_weights_before_config_and_never_mixes_old_and_new(tmp_path, monkeypatch):
    out = tmp_path / "lora"
    old = _trained(tmp_path, seed=0)
    old.base_model.export_as_lora(out)
    (out / "notes.txt").write_text("user file")
    old_weights = (out / "adapter_model.safetensors").read_bytes()
    new = _trained(tmp_path, seed=1)

    # 1) crash while the new weights are being written: the old weights stay whole, no config is left
    def broken_save(tensors, path):
        with open(path, "wb") as fh:
            fh.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(_lora_export, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        new.base_model.export_as_lora(out)
    assert (out / "adapter_model.safetensors").read_bytes() == old_weights
    assert not (out / "adapter_config.json").exists()
    monkeypatch.undo()

    # 2) crash after the weights, before the config: the folder does not load (never new weights + old config)
    old.base_model.export_as_lora(out)

    def crash(*a, **k):
        raise OSError("killed")

    monkeypatch.setattr(_lora_export, "atomic_write_text", crash)
    with pytest.raises(OSError, match="killed"):
        new.base_model.export_as_lora(out)
    assert not (out / "adapter_config.json").exists()
    with pytest.raises(ValueError, match="adapter_config.json"):
        PeftModel.from_pretrained(make_tiny_llama(), out)
    monkeypatch.undo()

    # 3) an uninterrupted export loads with stock PEFT and gives the new adapter's logits; no temp files remain
    new.base_model.export_as_lora(out)
    ids = torch.randint(0, 128, (2, 6))
    with torch.no_grad():
        ref = new(ids).logits
        got = PeftModel.from_pretrained(make_tiny_llama(), out)(ids).logits
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "notes.txt"]


# ---------------------------------------------------------------------------------------------- truncated files
def test_truncated_adapter_files_are_named_in_the_error(tmp_path):
    model = _trained(tmp_path)
    model.save_pretrained(tmp_path / "a")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    config = tmp_path / "a" / "adapter_config.json"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(HFTrustCacheError, match=r"adapter_model\.safetensors is truncated or corrupt"):
        PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "a")
    with pytest.raises(HFTrustCacheError, match=str(weights)):
        check_adapter_files(tmp_path / "a")
    weights.write_bytes(data)
    PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "a")  # intact again: loads

    text = config.read_text()
    assert json.loads(text)["peft_type"].startswith("LORASCULPT")
    config.write_text(text[: len(text) // 2])
    with pytest.raises(HFTrustCacheError, match=r"adapter_config\.json is truncated or not valid JSON"):
        LoRASculptConfig.from_pretrained(str(tmp_path / "a"))
    with pytest.raises(HFTrustCacheError, match=str(config)):
        check_adapter_files(tmp_path / "a")
