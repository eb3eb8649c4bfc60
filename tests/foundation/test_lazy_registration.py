"""`import hf_trust` stays free of PEFT and torch; the tuner types are registered when PEFT is imported.

Every check runs in a fresh interpreter: what a module import does (or does not do) cannot be observed in a process
that imported PEFT already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from hf_trust import LoRASculptConfig, ThanoRAConfig
from tests.conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
MARK = "_hf_trust_registers_peft_tuners"


def _python(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; return the JSON it prints after ``RESULT``.

    The working directory is a scratch folder; the repository root is on ``PYTHONPATH`` after any entries already
    there (so ``tests.conftest`` imports)."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default", "PYTHONPATH": path}
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    out["stderr"] = proc.stderr
    return out


def test_import_hf_trust_imports_neither_peft_nor_torch_and_leaves_only_the_finder():
    out = _python(
        f"""
        import importlib, importlib.util, json, sys
        before_modules, before_path = set(sys.modules), list(sys.meta_path)
        import hf_trust
        new = sorted(m for m in set(sys.modules) - before_modules
                     if not m.startswith("hf_trust") and m.split(".")[0] not in sys.stdlib_module_names)
        added = [f for f in sys.meta_path if f not in before_path]
        importlib.reload(hf_trust)  # idempotent: still one finder
        hooks_after_reload = sum(bool(getattr(f, {MARK!r}, False)) for f in sys.meta_path)
        spec = importlib.util.find_spec("peft")  # what transformers does to see whether PEFT is installed
        after_find = {{"peft": "peft" in sys.modules, "torch": "torch" in sys.modules,
                       "hooks": sum(bool(getattr(f, {MARK!r}, False)) for f in sys.meta_path)}}
        print("RESULT", json.dumps({{
            "peft": "peft" in sys.modules, "torch": "torch" in sys.modules, "third_party": new,
            "added": [bool(getattr(f, {MARK!r}, False)) for f in added],
            "hooks_after_reload": hooks_after_reload, "spec_found": spec is not None, "after_find": after_find,
        }}))
        """
    )
    assert out["peft"] is False and out["torch"] is False
    assert out["third_party"] == []
    assert out["added"] == [True]  # the finder is the one change to global state
    assert out["hooks_after_reload"] == 1
    assert out["spec_found"] and out["after_find"] == {"peft": False, "torch": False, "hooks": 1}


@pytest.fixture(scope="module")
def saved_adapters(tmp_path_factory):
    """A ThanoRA and a LoRASculpt adapter of the tiny Llama (non-zero B), with their logits on fixed ids."""
    folder = tmp_path_factory.mktemp("adapters")
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    torch.save(ids, folder / "ids.pt")
    configs = {
        "thanora": ThanoRAConfig(
            task_names=["a", "b"],
            r=4,
            target_modules=["q_proj", "v_proj"],
            rank_allocation="uniform",
            task_init="random",
        ),
        "lorasculpt": LoRASculptConfig(r=4, target_modules=["q_proj", "v_proj"]),
    }
    for name, cfg in configs.items():
        model = get_peft_model(make_tiny_llama(), cfg)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        model.eval()
        with torch.no_grad():
            torch.save(model(ids).logits, folder / f"{name}_logits.pt")
        model.save_pretrained(folder / name)
    return folder


LOAD = f"""
    import json, sys
    order, folder = sys.argv[1], sys.argv[2]
    if order == "hf_trust_first":
        import hf_trust
        assert "peft" not in sys.modules and "torch" not in sys.modules
        from peft import PeftConfig, PeftModel
    else:
        from peft import PeftConfig, PeftModel
        import hf_trust
    import torch
    from tests.conftest import make_tiny_llama
    out = {{}}
    ids = torch.load(f"{{folder}}/ids.pt")
    for name in ("thanora", "lorasculpt"):
        cfg = PeftConfig.from_pretrained(f"{{folder}}/{{name}}")  # before any class of ours is asked for by name
        model = PeftModel.from_pretrained(make_tiny_llama(), f"{{folder}}/{{name}}").eval()
        with torch.no_grad():
            diff = (model(ids).logits - torch.load(f"{{folder}}/{{name}}_logits.pt")).abs().max()
        out[name] = [type(cfg).__name__, type(model.base_model).__name__, float(diff)]
    import peft
    out["loader"] = type(peft.__loader__).__name__ + "/" + type(peft.__spec__.loader).__name__
    out["hooks_left"] = sum(bool(getattr(f, {MARK!r}, False)) for f in sys.meta_path)
    print("RESULT", json.dumps(out))
"""


@pytest.mark.parametrize("order", ["hf_trust_first", "peft_first"])
def test_saved_adapters_load_through_stock_peft_in_either_import_order(saved_adapters, order):
    out = _python(LOAD, order, str(saved_adapters))
    assert out["thanora"][:2] == ["ThanoRAConfig", "ThanoRAModel"] and out["thanora"][2] < 1e-6
    assert out["lorasculpt"][:2] == ["LoRASculptConfig", "LoRASculptModel"] and out["lorasculpt"][2] < 1e-6
    assert out["loader"] == "SourceFileLoader/SourceFileLoader"  # the hook put PEFT's own loader back
    assert out["hooks_left"] == 0  # its work done, the finder is gone
    assert "could not register" not in out["stderr"]


def test_asking_for_a_tuner_class_registers_every_tuner_and_get_peft_model_builds_both():
    out = _python(
        """
        import json, sys
        import hf_trust
        thanora_cfg = hf_trust.ThanoRAConfig  # a name looked up before anything imported PEFT
        from peft import get_peft_model
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
        from peft.utils import PeftType
        from tests.conftest import make_tiny_llama
        registered = [getattr(PeftType, n, None) in PEFT_TYPE_TO_CONFIG_MAPPING for n in ("THANORA", "LORASCULPT")]
        a = get_peft_model(make_tiny_llama(), thanora_cfg(task_names=["a", "b"], r=4, target_modules=["q_proj"],
                                                         rank_allocation="uniform", task_init="random"))
        b = get_peft_model(make_tiny_llama(), hf_trust.LoRASculptConfig(r=4, target_modules=["q_proj"]))
        print("RESULT", json.dumps({"registered": registered,
                                    "models": [type(a.base_model).__name__, type(b.base_model).__name__]}))
        """
    )
    assert out["registered"] == [True, True]
    assert out["models"] == ["ThanoRAModel", "LoRASculptModel"]


def test_a_tuner_submodule_imported_first_still_registers_every_tuner():
    # The hook fires inside hf_trust.peft_tuners' first line; registration must not need a half-imported module.
    out = _python(
        """
        import json, warnings
        warnings.simplefilter("error")
        from hf_trust.peft_tuners._lora_family import LoraFamilyConfig
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
        from peft.utils import PeftType
        names = [n for n in ("THANORA", "LORASCULPT") if getattr(PeftType, n, None) in PEFT_TYPE_TO_CONFIG_MAPPING]
        n_members = sum(m.name.startswith("THANORA") for m in PeftType)
        from hf_trust.peft_tuners import register_all
        register_all()  # again: idempotent
        print("RESULT", json.dumps({"names": names, "members": [n_members, sum(m.name.startswith("THANORA")
                                                                             for m in PeftType)]}))
        """
    )
    assert out["names"] == ["THANORA", "LORASCULPT"]
    assert out["members"] == [1, 1]


def test_a_failing_registration_warns_and_leaves_import_peft_working():
    out = _python(
        """
        import json, warnings
        import hf_trust

        def broken():
            raise ImportError("simulated: a tuner module failed")

        hf_trust._register_tuners = broken
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import peft
        print("RESULT", json.dumps({"warnings": [str(w.message) for w in caught], "lora": hasattr(peft, "LoraConfig")}))
        """
    )
    assert out["lora"] is True
    assert any("could not register its PEFT tuner types" in w and "simulated" in w for w in out["warnings"])
