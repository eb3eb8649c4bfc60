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
def _sculpt_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "keeps floor(ρ·n) = 0" in str(w.message)]


def test_preserve_ratio_that_keeps_no_entry_of_a_tensor_warns_once_and_keeps_one_entry_each():
    # Smallest LoRA tensor of the tiny Llama at r=4: lora_B of k_proj/v_proj, 16 x 4 = 64 entries
    # (2 key/value heads of width 8), so floor(rho * 64) = 0 exactly when rho < 1/64.
    smallest = 4 * (2 * 32 // 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=1e-4))
    got = _sculpt_warnings(record)
    # one warning for the whole model: every one of the 2 layers x 7 modules x 2 factors is too small
    assert len(got) == 1, got
    assert "preserve_ratio=0.0001" in got[0] and "of 28 LoRA tensor(s)" in got[0] and "and 23 more" in got[0]
    with torch.no_grad():
        for _, layer in model.base_model.sculpt_layers():
            layer.lora_B["default"].weight.normal_()
    before = {
        n: (m.lora_A["default"].weight.clone(), m.lora_B["default"].weight.clone())
        for n, m in model.base_model.sculpt_layers()
    }
    model.base_model.compute_masks()
    for name, layer in model.base_model.sculpt_layers():
        for w, w0 in zip((layer.lora_A["default"].weight, layer.lora_B["default"].weight), before[name]):
            # exactly one entry survives, and it is the largest |value| of the tensor, unchanged
            assert int((w != 0).sum()) == 1
            top = int(w0.abs().flatten().argmax())
            assert w.flatten()[top] == w0.flatten()[top] != 0
    # just below 1/64 only the four 64-entry tensors (lora_B of k_proj, v_proj in 2 layers) are named
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=0.99 / smallest))
    got = _sculpt_warnings(record)
    assert len(got) == 1 and "of 4 LoRA tensor(s)" in got[0] and "lora_B of" in got[0] and "k_proj" in got[0], got
    # at the bound nothing is named, and pruning keeps exactly floor(rho * n) of each tensor (the official rule)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = get_peft_model(make_tiny_llama(), _cfg(preserve_ratio=1 / smallest))
    assert not _sculpt_warnings(record)
    with torch.no_grad():
        for _, layer in model.base_model.sculpt_layers():
            layer.lora_B["default"].weight.normal_()
    model.base_model.compute_masks()
    for _, layer in model.base_model.sculpt_layers():
        for w in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
            assert int((w != 0).sum()) == math.floor(w.numel() / smallest) >= 1


class _OneOutput(torch.nn.Module):
    """A regression head: its last layer has one output, so its LoRA B factor is 1 x r."""

    def __init__(self):
        super().__init__()
        self.lin0 = torch.nn.Linear(8, 16)
        self.lin1 = torch.nn.Linear(16, 1)

    def forward(self, x):
        return self.lin1(torch.relu(self.lin0(x)))


def test_default_config_adapts_a_one_output_layer():
    # LoRASculptConfig() defaults (r = 8, rho = 0.1): the 1 x 8 lora_B of lin1 has floor(0.8) = 0 entries to
    # keep. The config used to refuse such a model outright, where stock LoRA adapts it; PEFT's own tests
    # hold 226 such rows. Now it warns once, naming the tensor, and pruning keeps its largest entry.
    torch.manual_seed(0)
    base = _OneOutput()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = get_peft_model(base, LoRASculptConfig(target_modules=["lin0", "lin1"]))
    got = _sculpt_warnings(record)
    assert len(got) == 1 and "of 1 LoRA tensor(s): lora_B of lin1 (shape (1, 8))" in got[0], got
    tuner = model.base_model
    with torch.no_grad():
        for _, layer in tuner.sculpt_layers():
            layer.lora_B["default"].weight.normal_()
    b1 = dict(tuner.sculpt_layers())["lin1"].lora_B["default"].weight
    b1_before = b1.detach().clone()
    tuner.compute_masks()
    assert int((b1 != 0).sum()) == 1 and b1.abs().max() == b1_before.abs().max()
    # the other factors keep exactly floor(0.1 * n) entries: lora_A of lin0 8x8 -> 6, lora_B of lin0 16x8 -> 12,
    # lora_A of lin1 8x16 -> 12
    layers = dict(tuner.sculpt_layers())
    assert int((layers["lin0"].lora_A["default"].weight != 0).sum()) == 6
    assert int((layers["lin0"].lora_B["default"].weight != 0).sum()) == 12
    assert int((layers["lin1"].lora_A["default"].weight != 0).sum()) == 12
    # and the pruned adapter still changes the one output (the B row is not zeroed)
    with torch.no_grad():
        delta = layers["lin1"].lora_B["default"].weight @ layers["lin1"].lora_A["default"].weight
    assert delta.abs().sum() > 0


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


def _train_with_lambda(tmp_path, lam, steps=3):
    torch.set_num_threads(1)
    model = get_peft_model(make_tiny_llama(), _cfg(cmr_lambda=lam, mask_step=1))
    args = _args(tmp_path, steps=steps)
    args.logging_strategy, args.logging_steps = "steps", 1
    trainer = LoRASculptTrainer(model=model, args=args, train_dataset=_data())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.train()
    return [str(w.message) for w in record if "CMR term" in str(w.message)], trainer.state.log_history


def test_a_cmr_term_that_dominates_the_loss_warns_once(tmp_path):
    # Why: lambda = 1e30 is finite, so the config accepts it, but from the second step (B is zero at the
    # first) the loss is ~1e27-1e28, almost all of it lambda * L_CMR, and the gradient norm overflows
    # to inf; before the check, nothing told the user.
    got, history = _train_with_lambda(tmp_path, 1e30)
    steps = [h for h in history if "loss" in h]
    assert steps[0]["loss"] < 10 and steps[1]["loss"] > 1e20 and math.isinf(steps[1]["grad_norm"])
    assert len(got) == 1, got
    assert "cmr_lambda=1e+30" in got[0] and "at step 1" in got[0] and "official λ is 1e-3" in got[0]
    # the official lambda trains the same model without the warning
    got, history = _train_with_lambda(tmp_path / "official", 1e-3)
    assert not got and all(math.isfinite(h["grad_norm"]) for h in history if "grad_norm" in h)


def test_a_non_finite_cmr_term_is_an_error(tmp_path):
    # Bypassing the config's finite-lambda check: inf * L_CMR is inf once B is non-zero; a clear error
    # rather than a run of inf losses.
    model = get_peft_model(make_tiny_llama(), _cfg(mask_step=1))
    model.base_model.peft_config["default"].cmr_lambda = float("inf")
    with torch.no_grad():
        for _, layer in model.base_model.sculpt_layers():
            layer.lora_B["default"].weight.normal_()
    trainer = LoRASculptTrainer(model=model, args=_args(tmp_path, steps=2), train_dataset=_data())
    with pytest.raises(HFTrustConfigError, match=r"λ·L_CMR is inf at step 0 \(LoRASculptConfig.cmr_lambda=inf\)"):
        trainer.train()


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
