"""Every ```python block of README.md runs as written.

A block uses objects a reader brings (``model``, ``ds``, ``training_args``, ...). Each such name is bound by the
block's fixture below, built offline from configs, the smallest that the block's calls accept; a block is then run
exactly as the README prints it (its own imports included: a block that uses a name it neither imports nor gets
from its fixture fails with ``NameError``). A new README block without a fixture entry fails
``test_every_block_has_a_fixture``.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.foundation.test_hub_cards import hub_server  # noqa: F401  (the loopback Hub of the push tests)

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


# ------------------------------------------------------------------ fixtures: what each block is handed
_LM_DATA = """
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
ids = torch.randint(0, 64, (16, 12)).tolist()
ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 12] * 16, "labels": ids})
training_args = TrainingArguments(output_dir="trainer_out", max_steps=2, per_device_train_batch_size=4,
                                  report_to=[], save_strategy="no", use_cpu=True)
"""

_COT = """
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

words = ["<pad>", "<s>", "<think>", "</think>", "Q", "A", "+", "="] + [str(i) for i in range(10)]
backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>")
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                     max_position_embeddings=64)).eval()
prompts = ["Q 1 + 2 =", "Q 3 + 4 =", "Q 2 + 2 =", "Q 5 + 1 ="]
outputs = ["<think> 1 + 2 = 3 </think> A 3", "<think> 3 + 4 = 8 </think> A 8",
           "<think> 2 + 2 = 4 </think> A 4", "<think> 5 + 1 = 7 </think> A 7"]
is_correct = [1, 0, 1, 0]
"""

_TABULAR = """
import numpy as np
import torch
from datasets import Dataset

rng = np.random.default_rng(0)
y = rng.integers(0, 3, 400)
x = rng.normal(size=(3, 6))[y] * 2 + rng.normal(size=(400, 6))
ds = Dataset.from_dict({"x": x.astype(np.float32).tolist(), "label": y.tolist()})
test = ds.select(range(60))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
"""

_GGEUR = """
import numpy as np
import torch
from datasets import Dataset

rng = np.random.default_rng(0)
centres = rng.normal(size=(4, 12)) * 3
def digits(n):
    y = rng.integers(0, 4, n)
    return Dataset.from_dict({"image": (centres[y] + rng.normal(size=(n, 12))).astype(np.float32).tolist(),
                              "label": y.tolist()})
ds, test_ds = digits(600), digits(120)
torch.manual_seed(0)
image_encoder = torch.nn.Linear(12, 8)  # any module or callable mapping a batch of images to (batch, dim)
from hf_trust.trainers.ggeur import embed_dataset as _embed
test_emb = _embed(image_encoder, test_ds)
"""

_THANORA = """
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
def batches(lo, hi, seed):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(lo, hi, (4, 10), generator=g)} for _ in range(2)]
qa_batches, math_batches, code_batches = batches(0, 20, 0), batches(20, 40, 1), batches(40, 64, 2)
ids = torch.randint(0, 64, (12, 10)).tolist()
mixed = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 10] * 12, "labels": ids,
                           "task": ["qa", "math", "code"] * 4})
training_args = TrainingArguments(output_dir="trainer_out", max_steps=2, per_device_train_batch_size=4,
                                  report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False)
"""

_BYE = """
from datasets import Dataset
from PIL import Image

from hf_trust.demo.studies import bye as toy
from tests.bye.test_processor import make_processor

vlm = toy.make_tiny_llava(0)
processor = make_processor()
images, _, _ = toy.make_images(8, 0.0, 0)
ds = Dataset.from_dict({"image": [Image.fromarray(i) for i in images], "question": ["what is this ?"] * 8})
"""

_PUSH = """
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=2))
adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))
adapter.peft_config["default"].base_model_name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
adapter.save_pretrained("out/adapter")
"""

_AGENTLEAK = """
from hf_trust.agents import (
    DataFlowLedger, EPEOrchestrator, PrivacyEnhancingAgent, PrivacyPolicy, generate_profiles, make_agents,
)
from tests.epeagent.scripted import EchoBackend

# a multi-agent run with the rule-based privacy agent in front of scripted agents that echo what they are given
ledger = DataFlowLedger()
for profile in generate_profiles("medical", n_users=2, seed=5):
    agents = make_agents("medical", EchoBackend())
    privacy = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(profile))
    EPEOrchestrator(agents, privacy).run(profile, {"question": "Proceed?"}, ledger=ledger)
"""

#: (a string only that block holds, the code that binds the names it uses, whether it needs the loopback Hub)
FIXTURES: list[tuple[str, str, bool]] = [
    ("LoRASculptConfig(", _LM_DATA, False),
    ('metric_path("cot_kinetics"), "detection"', _COT, False),
    ("FederatedTrainer(", _TABULAR, False),
    ("GGEURTrainer(", _GGEUR, False),
    ("preprocess_thanora(", _THANORA, False),
    ("BYEFilter(vlm, processor)", _BYE, False),
    ("FlowerFederation(", _TABULAR, False),
    ("push_adapter(", _PUSH, True),
    ("to_agentleak(ledger)", _AGENTLEAK, False),
]


def _fixture_for(block: str) -> tuple[str, str, bool]:
    found = [f for f in FIXTURES if f[0] in block]
    assert len(found) == 1, f"README block needs exactly one fixture entry in tests/test_readme.py:\n{block}"
    return found[0]


def test_every_block_has_a_fixture():
    blocks = readme_blocks()
    assert len(blocks) >= len(FIXTURES)
    for block in blocks:
        _fixture_for(block)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_block_runs_as_written(index, tmp_path, monkeypatch, request):
    block = readme_blocks()[index]
    key, setup, needs_hub = _fixture_for(block)
    monkeypatch.chdir(tmp_path)
    if needs_hub:
        endpoint, _ = request.getfixturevalue("hub_server")
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_test")
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    namespace: dict = {"__name__": f"readme_block_{index}"}
    exec(compile(textwrap.dedent(setup), f"<fixture for {key}>", "exec"), namespace)
    exec(compile(block, f"<README.md python block {index}>", "exec"), namespace)
