"""Shared fixtures.  Every test runs single-threaded and offline."""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# On a 2-core machine two intra-op threads made small ops ~50x slower than one.
torch.set_num_threads(1)


# A test skipped because a module is missing is a missing install step, not a pass: `make setup` installs every
# extra. Only the modules README.md lists as optional ("Optional test modules: a, b.") may be skipped for.
_README = Path(__file__).resolve().parents[1] / "README.md"
_SKIPPED_IMPORT = re.compile(r"could not import '([^']+)'")


def optional_test_modules() -> set[str]:
    match = re.search(r"Optional test modules: ([^.\n]*)\.", _README.read_text(encoding="utf-8"))
    if match is None:
        return set()
    names = {n.strip().strip("`") for n in match.group(1).split(",")}
    return {n for n in names if n and n != "none"}


def _missing_install_step(report) -> str | None:
    """The module a skip report blames, when it is a missing import that README does not mark optional."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    found = _SKIPPED_IMPORT.search(str(report.longrepr[2]))
    if found is None or found.group(1).split(".")[0] in optional_test_modules():
        return None
    return str(report.longrepr[2]).removeprefix("Skipped: ")


def _fail_missing_import(report) -> None:
    why = _missing_install_step(report)
    if why is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"{why}: a module the suite needs is not installed. `make setup` installs every extra; add the "
            "missing package to the setup (pyproject extras or requirements-*.txt), or list the module under "
            "'Optional test modules' in README.md."
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_missing_import(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_missing_import(outcome.get_result())


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test``'s ``--dist loadgroup``: one worker per module, the Flower simulation modules together, the
    longest first (tests/scheduling.py says why xdist's own loadgroup cannot do that under pytest 9.2)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.scheduling import make_scheduler

    return make_scheduler(config, log)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def make_word_tokenizer(words, unk_token: str = "<pad>", **special):
    """A whitespace word-level fast tokenizer over ``words`` (ids in list order); ``special`` names special tokens
    (default: ``pad_token="<pad>"``, ``bos_token="<s>"``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=unk_token))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, **(special or {"pad_token": "<pad>", "bos_token": "<s>"}))


def make_tiny_llama(vocab_size: int = 128, hidden_size: int = 32, layers: int = 2, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **kw,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def make_tiny_gpt2(vocab_size: int = 128, n_embd: int = 32, layers: int = 2, **kw):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_embd=n_embd, n_layer=layers, n_head=4, n_positions=256, **kw)
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture
def tiny_gpt2():
    return make_tiny_gpt2()
