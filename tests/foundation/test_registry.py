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
    with pytest.raises(ValueError, match="lower-case"):
        register_tuner("Bad", _ThrowawayConfig, _ThrowawayModel)
    with pytest.raises(ValueError, match="lower-case"):
        register_tuner("bad_", _ThrowawayConfig, _ThrowawayModel)


def test_other_tuner_under_same_name_is_refused():
    _register()

    @dataclass
    class Other(LoraConfig):
        pass

    with pytest.raises(KeyError, match="different tuner"):
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
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "IMPORT HF_TRUST FIRST" in proc.stderr.splitlines()[-1]


def test_import_hf_trust_registers_available_tuners():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    import hf_trust  # noqa: F401
    from hf_trust import peft_tuners

    for name in peft_tuners.register_all():
        assert getattr(PeftType, name.upper()) in PEFT_TYPE_TO_CONFIG_MAPPING
