"""The single PEFT registration helper: enum extension, idempotence, save/load round trips."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraModel
from peft.utils import PeftType

from hf_trust.errors import HFTrustConfigError, HFTrustStateError
from hf_trust.peft_tuners._registry import peft_type_value, register_tuner
from tests.conftest import make_tiny_llama


@dataclass
class _ThrowawayConfig(LoraConfig):
    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.THROWAWAY


class _ThrowawayModel(LoraModel):
    pass


def _register():
    return register_tuner("throwaway", _ThrowawayConfig, _ThrowawayModel, prefix="lora_")


def test_register_is_idempotent_and_adds_enum_member():
    first = _register()
    second = _register()
    assert first is second is PeftType.THROWAWAY
    assert first.value == peft_type_value("throwaway") == "THROWAWAY (IMPORT HF_TRUST FIRST)"
    assert list(PeftType).count(first) == 1
    assert PeftType(first.value) is first  # lookup by the value read from JSON


def test_bad_tuner_names_are_refused():
    with pytest.raises(HFTrustConfigError, match="lower-case"):
        register_tuner("Bad", _ThrowawayConfig, _ThrowawayModel)
    with pytest.raises(HFTrustConfigError, match="lower-case"):
        register_tuner("bad_", _ThrowawayConfig, _ThrowawayModel)


def test_other_tuner_under_same_name_is_refused():
    _register()

    @dataclass
    class Other(LoraConfig):
        pass

    with pytest.raises(HFTrustStateError, match="different tuner"):
        register_tuner("throwaway", Other, _ThrowawayModel, prefix="lora_")


def test_round_trip_through_stock_peft_loaders(tmp_path):
    _register()
    base = make_tiny_llama()
    model = get_peft_model(base, _ThrowawayConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 7))
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "THROWAWAY (IMPORT HF_TRUST FIRST)"

    config = PeftConfig.from_pretrained(str(tmp_path))
    assert isinstance(config, _ThrowawayConfig) and config.peft_type is PeftType.THROWAWAY
    reloaded = PeftModel.from_pretrained(make_tiny_llama(), str(tmp_path))
    assert isinstance(reloaded.peft_config["default"], _ThrowawayConfig)
    with torch.no_grad():
        got = reloaded(ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_loading_without_registration_names_the_missing_import(tmp_path):
    _register()
    model = get_peft_model(make_tiny_llama(), _ThrowawayConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    # A fresh interpreter that did not import hf_trust (nor register the type).
    code = f"from peft import PeftConfig\nPeftConfig.from_pretrained({str(tmp_path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "IMPORT HF_TRUST FIRST" in proc.stderr.splitlines()[-1]


def test_import_hf_trust_registers_available_tuners():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    import hf_trust  # noqa: F401
    from hf_trust import peft_tuners

    for name in peft_tuners.register_all():
        assert getattr(PeftType, name.upper()) in PEFT_TYPE_TO_CONFIG_MAPPING


# ---------------------------------------------------------------------------------------------- LoRA-family base
from hf_trust.peft_tuners._lora_family import LoraFamilyConfig, LoraFamilyModel  # noqa: E402
from hf_trust.peft_tuners._trainer import RegularizedTrainer  # noqa: E402


@dataclass
class _FamilyConfig(LoraFamilyConfig):
    weight: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.FAMILYTOY


class _FamilyModel(LoraFamilyModel):
    """A third LoRA-family tuner in a few lines: per-layer state, a regulariser, nothing else."""

    config_name = "_FamilyConfig"
    trainer_name = "_FamilyTrainer"

    def _create_and_replace(self, lora_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        super()._create_and_replace(lora_config, adapter_name, target, target_name, parent, current_key, **kwargs)
        layer = getattr(parent, target_name)
        self.add_layer_state(layer, "toy_note", adapter_name, current_key)
        self.add_layer_state(layer, "toy_buf", adapter_name, torch.full((2,), 7.0), persistent=True)

    def _owns_layer(self, layer, adapter):
        return adapter in getattr(layer, "toy_note", {})

    def _regularizer(self, adapter):
        cfg = self._config(adapter)
        return cfg.weight * sum((layer.lora_B[adapter].weight ** 2).sum() for _, layer in self.tuner_layers(adapter))


class _FamilyTrainer(RegularizedTrainer):
    tuner_cls = _FamilyModel


def _family():
    register_tuner("familytoy", _FamilyConfig, _FamilyModel, prefix="lora_")
    torch.manual_seed(0)
    return get_peft_model(
        make_tiny_llama(), _FamilyConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )


def test_lora_family_state_is_saved_and_removed_with_its_adapter(tmp_path):
    model = _family()
    model.add_adapter("second", _FamilyConfig(r=2, target_modules=["q_proj"]))
    layers = [m for _, m in model.base_model.model.named_modules() if hasattr(m, "toy_note")]
    assert len(layers) == 4 and sum("second" in m.toy_note for m in layers) == 2
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = load_file(tmp_path / "adapter_model.safetensors")
    assert sum(k.endswith("toy_buf") for k in keys) == 4  # persistent state travels with the adapter
    model.base_model.delete_adapter("second")
    for m in layers:
        assert "second" not in m.toy_note and "second" not in m.toy_buf
        assert "default" in m.toy_note


def test_lora_family_regulariser_hook_guard_and_export(tmp_path):
    import warnings

    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model = _family()
    expected = 0.5 * sum((layer.lora_B["default"].weight ** 2).sum() for _, layer in model.base_model.tuner_layers())
    torch.testing.assert_close(model.base_model.regularization_loss(), expected)
    ids = torch.randint(3, 128, (8, 6)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True
    )
    for trainer_cls, warns in ((Trainer, True), (_FamilyTrainer, False)):
        model = _family()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            trainer_cls(model=model, args=args, train_dataset=data).train()
        msgs = [str(w.message) for w in rec if "without its training hooks" in str(w.message)]
        assert (msgs != []) is warns and (not warns or "_FamilyTrainer" in msgs[0])
    # export to stock LoRA: same logits without the tuner
    probe = torch.randint(0, 128, (2, 7))
    model.eval()
    with torch.no_grad():
        ref = model(probe).logits
    model.base_model.export_as_lora(tmp_path / "lora")
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    with torch.no_grad():
        got = PeftModel.from_pretrained(make_tiny_llama(), tmp_path / "lora")(probe).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
