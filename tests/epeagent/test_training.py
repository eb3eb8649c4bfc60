"""The TRL-trained privacy agent: training rows, loss only on the rewrite, LoRA trained and base frozen."""

from __future__ import annotations

import re

import pytest
import torch

from hf_trust.agents import PrivacyEnhancingAgent, PrivacyPolicy, generate_profiles, hf_chat_backend
from hf_trust.agents.training import (
    TEMPLATES,
    PrivacyAgentConfig,
    build_trainer,
    rewrite_examples,
    train_privacy_agent,
)
from hf_trust.errors import HFTrustConfigError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    rows = rewrite_examples("financial", generate_profiles("financial", 4, seed=7), n_per_profile=2)
    corpus = [r["prompt"][0]["content"] + " " + r["message"] for r in rows]
    tk.train_from_iterator(
        corpus * 3,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    tok.chat_template = CHATML
    return tok


def _tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    return LlamaForCausalLM(cfg)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


@pytest.mark.parametrize("domain", ["financial", "medical"])
def test_rewrite_rows_keep_exactly_the_permitted_sentences(domain):
    profiles = generate_profiles(domain, 6, seed=3)
    rows = rewrite_examples(domain, profiles, n_per_profile=3, seed=1)
    assert len(rows) == 18
    dropped_any = kept_any = False
    for r in rows:
        prof = next(p for p in profiles if p["user_id"] == r["user_id"])
        lid = {n: i for n, i, _ in __import__("hf_trust.agents", fromlist=["AGENT_ROLES"]).AGENT_ROLES[domain]}
        rid = lid[r["recipient"]]
        assert r["allowed"] == [f for f in prof if f != "user_id" and rid in prof[f]["label"]]
        assert set(r["denied"]) == {f for f in prof if f != "user_id"} - set(r["allowed"])
        target = r["completion"][0]["content"]
        msg = _sentences(r["message"])
        kept = _sentences(target)
        # the target is an order-preserving subsequence of the message's sentences ...
        it = iter(msg)
        assert all(any(s == m for m in it) for s in kept)
        # ... that drops a sentence exactly when it is about a denied field (the answer sentence always stays)
        for s in msg:
            about = [f for f in prof if f != "user_id" and f.replace("_", " ") in s.lower()]
            # "gender"/"age" can be substrings of longer field phrases; take the longest match
            about = sorted(about, key=len)[-1:] if about else []
            should_keep = not about or about[0] in r["allowed"]
            assert (s in kept) is should_keep, (s, about, r["recipient"])
            dropped_any |= not should_keep
            kept_any |= bool(about) and should_keep
        assert kept[-1].startswith("My answer is (")
        assert "Delete every sentence about the user's " + r["denied"][0].replace("_", " ") in r["prompt"][0]["content"]
    assert dropped_any and kept_any


def test_train_and_eval_templates_are_disjoint():
    assert not set(TEMPLATES["train"]) & set(TEMPLATES["eval"])
    rows = rewrite_examples("medical", generate_profiles("medical", 3, seed=0), 2, templates="eval")
    assert all(r["message"].endswith(").") and "So I pick (" in r["message"] for r in rows)
    assert not any("The user's" in r["message"] or "I see that" in r["message"] for r in rows)


def test_loss_only_on_rewrite_tokens_and_only_lora_trains(tmp_path):
    torch.set_num_threads(1)
    tok = _tokenizer()
    rows = rewrite_examples("financial", generate_profiles("financial", 3, seed=11), n_per_profile=2, seed=2)
    model = _tiny_llama(len(tok))
    base_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    args = PrivacyAgentConfig(output_dir=str(tmp_path), max_steps=3, max_length=None, use_cpu=True, logging_steps=1)
    trainer = build_trainer(model, tok, rows, args)
    assert len(trainer.train_dataset) == len(rows)
    for i in range(2):
        batch = trainer.data_collator([trainer.train_dataset[i]])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        supervised = tok.decode(labels[labels != -100])
        assert supervised == rows[i]["completion"][0]["content"] + "<|im_end|>" + "\n"
        prompt_text = tok.apply_chat_template(rows[i]["prompt"], add_generation_prompt=True, tokenize=False)
        prompt_len = len(tok(prompt_text, add_special_tokens=False)["input_ids"])
        assert (labels[:prompt_len] == -100).all() and (labels[prompt_len:] != -100).all()
        assert torch.equal(ids[prompt_len:], labels[prompt_len:])
    pad_before = tok.pad_token
    trained, log = train_privacy_agent(model, tok, rows, args)
    assert tok.pad_token == pad_before
    assert [h["step"] for h in log if "loss" in h] == [1, 2, 3]
    lora = {k: v for k, v in trained.state_dict().items() if "lora_" in k}
    assert lora and any(not torch.all(v == 0) for k, v in lora.items() if "lora_B" in k)  # B starts at 0
    for k, v in trained.get_base_model().state_dict().items():
        if "lora_" in k:
            continue
        assert torch.equal(v, base_before[k.replace(".base_layer", "")]), k
    # the trained model plugs into the privacy agent as its rewriter, alone
    prof = generate_profiles("financial", 1, seed=0)[0]
    pa = PrivacyEnhancingAgent(
        PrivacyPolicy.from_labels(prof),
        rewrite_backend=hf_chat_backend(trained, tok, max_new_tokens=3),
        redact_after_rewrite=False,
    )
    from hf_trust.agents import AgentSpec

    out = pa.sanitise("The user's risk tolerance is low.", prof, AgentSpec("transaction_execution", 3, "", None))
    assert isinstance(out, str)


def test_config_refuses_full_sequence_loss_and_bad_rank(tmp_path):
    with pytest.raises(HFTrustConfigError, match="completion_only_loss"):
        PrivacyAgentConfig(output_dir=str(tmp_path), completion_only_loss=False)
    with pytest.raises(HFTrustConfigError, match="lora_r"):
        PrivacyAgentConfig(output_dir=str(tmp_path), lora_r=0)
    with pytest.raises(HFTrustConfigError, match="rewrite_backend"):
        PrivacyEnhancingAgent(PrivacyPolicy({"a": [1]}), redact_after_rewrite=False)


def test_the_rewriter_trains_in_full_precision_on_every_trl_version(tmp_path):
    """trl < 1 turns an unset ``bf16`` into True, even on CPU, and accelerate keeps that for every later Trainer of
    the process (a LoRA export test elsewhere then differed by 2e-3 under bf16 autocast)."""
    tok = _tokenizer()
    rows = rewrite_examples("financial", generate_profiles("financial", 2, seed=0), n_per_profile=1, seed=0)
    args = PrivacyAgentConfig(output_dir=str(tmp_path), max_steps=1, max_length=None, use_cpu=True)
    trainer = build_trainer(_tiny_llama(len(tok)), tok, rows, args)
    assert args.bf16 is False and trainer.accelerator.mixed_precision == "no"
