"""CoT-Kinetics study driver: short greedy arithmetic chains from a causal LM, labelled by reasoning-gym.

Shared by the demo recipe and ``benchmarks/cot_kinetics_eval.py``. The model writes a few-shot chain
("a + b = c. c - d = e. The answer is e.") for reasoning-gym arithmetic problems; the task's own scorer
labels the final number. Chains are cached on disk (atomic JSON) under a key built from everything that
determines them: the model's identity (class, config, every weight byte) and the tokenizer's
(:func:`hf_trust.fingerprint.model_identity`), the task configuration, sizes and seeds, the prompt template
and the generation settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from hf_trust.atomic import atomic_write_json
from hf_trust.errors import HFTrustCacheError, HFTrustConfigError
from hf_trust.fingerprint import json_sha256, model_identity

#: The reasoning ends where this marker starts; the answer follows it.
ANSWER_MARKER = "The answer is"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

N_SHOTS = 3
_SHOT_SEED = 99_991  # few-shot problems come from another seed than the test problems
CACHE_VERSION = 3  # 3: keys from hf_trust.fingerprint


@dataclass(frozen=True)
class TaskSpec:
    """One reasoning-gym task with its difficulty settings."""

    name: str
    config: dict = field(default_factory=dict)

    def key(self) -> dict:
        return {"name": self.name, "config": self.config}


#: Problems SmolLM2-135M-Instruct answers about half the time with the 3-shot prompt. Probed on 30 items
#: each: three-term chains 0.07–0.13 (it drops or repeats operands), two terms of two digits 0.27–0.30;
#: two terms of one or two digits, additions only, lie between.
DEFAULT_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "basic_arithmetic",
        {
            "min_terms": 2,
            "max_terms": 2,
            "min_digits": 1,
            "max_digits": 2,
            "operators": ["+"],
            "allow_parentheses": False,
            "allow_negation": False,
        },
    ),
)


@dataclass
class Chain:
    """One generated chain and its label."""

    task: str
    question: str
    answer: str
    prompt_ids: list[int]
    output_ids: list[int]
    text: str
    predicted: Optional[str]
    correct: int


def worked_solution(expression: str) -> str:
    """Left-to-right steps of a ``+``/``-`` expression: ``"4 + 9 - 1"`` → ``"4 + 9 = 13. 13 - 1 = 12. The answer is 12."``."""
    parts = re.findall(r"\d+|[+\-*/]", expression)
    if len(parts) < 3 or len(parts) % 2 == 0 or any(op not in "+-" for op in parts[1::2]):
        raise HFTrustConfigError(f"worked solutions need a + / - chain of non-negative numbers, got {expression!r}.")
    acc, steps = int(parts[0]), []
    for op, num in zip(parts[1::2], parts[2::2]):
        new = acc + int(num) if op == "+" else acc - int(num)
        steps.append(f"{acc} {op} {num} = {new}.")
        acc = new
    return " ".join(steps) + f" {ANSWER_MARKER} {acc}."


def build_prompt(question: str, shots: Sequence[tuple[str, str]]) -> str:
    """Few-shot completion prompt: worked examples, then the question and an open answer line."""
    head = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots)
    return f"{head}Question: {question}\nAnswer:"


def few_shot(spec: TaskSpec, n: int = N_SHOTS) -> list[tuple[str, str]]:
    """``n`` worked examples of the same task and difficulty, from a seed the test problems never use."""
    return [
        (r["question"], worked_solution(r["entry"]["metadata"]["expression"]))
        for r in load_problems([spec], n, _SHOT_SEED)
    ]


def extract_answer(text: str) -> Optional[str]:
    """The number right after the last answer marker, else the last number in the text, else None."""
    if ANSWER_MARKER in text:
        nums = _NUMBER.findall(text.rsplit(ANSWER_MARKER, 1)[-1])
        if nums:
            return nums[0]
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


def load_problems(tasks: Sequence[TaskSpec], per_task: int, seed: int) -> list[dict]:
    """``per_task`` problems of each task (question, answer, entry) from reasoning-gym."""
    import reasoning_gym

    if per_task < 1:
        raise HFTrustConfigError(f"per_task must be >= 1, got {per_task}.")
    rows = []
    for i, spec in enumerate(tasks):
        try:
            ds = reasoning_gym.create_dataset(spec.name, size=per_task, seed=seed + 1000 * i, **spec.config)
        except Exception as exc:  # reasoning-gym raises assorted types for unknown tasks and bad configs
            raise HFTrustConfigError(
                f"reasoning-gym cannot build task {spec.name!r} with {spec.config}: {exc}"
            ) from None
        for item in ds:
            rows.append(
                {
                    "spec": i,
                    "task": spec.name,
                    "question": item["question"],
                    "answer": str(item["answer"]),
                    "entry": item,
                }
            )
    return rows


def _newline_ids(tokenizer: Any) -> set[int]:
    # Any token whose text contains a newline ends the answer line.
    return {i for t, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([t])}


def torch_no_grad(fn: Callable) -> Callable:
    """``torch.no_grad()`` as a decorator, importing torch only when the function runs."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def shared_prefix_length(encoded: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every prompt shares (the few-shot examples), leaving each prompt ≥ 1 own token."""
    if not encoded:
        return 0
    n = min(len(e) for e in encoded) - 1
    k = 0
    while k < n and all(e[k] == encoded[0][k] for e in encoded):
        k += 1
    return max(k, 0)


@torch_no_grad
def greedy_after_prefix(
    model: Any, chunk: Sequence[Sequence[int]], prefix_len: int, pad: int, done_ids: set[int], max_new_tokens: int
) -> list[list[int]]:
    """Greedy continuations of prompts that share their first ``prefix_len`` tokens: the prefix is encoded once
    and its key/value cache repeated for every row, so each row only pays for its own tokens.

    Rows are ``prefix + left-padded suffix``: positions continue from the prefix for each row's real tokens and
    the padding is masked out, which is the same sequence as each prompt alone.
    """
    import inspect

    import torch

    # transformers 5 names the key/value cache argument ``cache``, 4.x ``past_key_values``
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def cache_of(out: Any) -> Any:
        return getattr(out, "cache", None) or out.past_key_values

    b = len(chunk)
    cache = None
    if prefix_len > 0:
        cache = cache_of(model(input_ids=torch.tensor([list(chunk[0][:prefix_len])]), use_cache=True))
        cache.batch_repeat_interleave(b)
    width = max(len(c) - prefix_len for c in chunk)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for r, c in enumerate(chunk):
        own = list(c[prefix_len:])
        ids[r, width - len(own) :] = torch.tensor(own)
        mask[r, prefix_len + width - len(own) :] = 1
    position_ids = prefix_len + (mask[:, prefix_len:].cumsum(-1) - 1).clamp_min(0)
    new = torch.empty((b, 0), dtype=torch.long)
    finished = torch.zeros(b, dtype=torch.bool)
    done = torch.tensor(sorted(done_ids), dtype=torch.long)
    for _ in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True, **{cache_arg: cache})
        cache = cache_of(out)
        ids = out.logits[:, -1].argmax(-1, keepdim=True)
        new = torch.cat([new, ids], 1)
        finished |= torch.isin(ids[:, 0], done)
        if bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long)], 1)
        position_ids = position_ids[:, -1:] + 1
    return new.tolist()


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> list[tuple[list[int], list[int]]]:
    """Greedy continuations up to the first newline: ``(prompt ids, output ids)`` per prompt.

    The few-shot examples every prompt starts with are encoded once (:func:`greedy_after_prefix`): they are
    about 100 of the 112 prompt tokens, so this removes most of the generation's cost. The caller's tokenizer
    is never modified.
    """
    stop = _newline_ids(tokenizer)
    done = stop | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    prefix_len = shared_prefix_length(encoded)
    results: list[tuple[list[int], list[int]]] = []
    starts: Iterable[int] = range(0, len(encoded), batch_size)
    for s in progress(starts) if progress else starts:
        chunk = encoded[s : s + batch_size]
        for c, new in zip(chunk, greedy_after_prefix(model, chunk, prefix_len, pad, done, max_new_tokens)):
            cut = next((k for k, t in enumerate(new) if t in done), len(new))
            results.append((list(c), new[:cut]))
    return results


def chains_cache_key(fingerprint: str, tasks: Sequence[TaskSpec], per_task: int, seed: int, settings: dict) -> str:
    """Hex key of a chain set: model identity, tasks and difficulty, sizes, seed, prompt and generation."""
    blob = {
        "version": CACHE_VERSION,
        "model": fingerprint,
        "tasks": [t.key() for t in tasks],
        "per_task": per_task,
        "seed": seed,
        "prompts": [build_prompt("{question}", few_shot(t)) for t in tasks],
        "marker": ANSWER_MARKER,
        "settings": settings,
    }
    return json_sha256(blob)[:24]


def _read_chains(path: Path, key: str, n: int) -> Optional[list[Chain]]:
    """The cached chains at ``path`` if it holds ``n`` chains under ``key``; a corrupt or stale file is removed."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("key") == key and len(data["chains"]) == n:
            return [Chain(**c) for c in data["chains"]]
    except (ValueError, KeyError, TypeError):  # unreadable JSON or rows of another Chain layout
        pass
    path.unlink(missing_ok=True)  # regenerated by the caller
    return None


def make_chains(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[TaskSpec] = DEFAULT_TASKS,
    per_task: int = 40,
    seed: int = 0,
    max_new_tokens: int = 40,
    batch_size: int = 16,
    cache_dir: Optional[Path] = None,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> list[Chain]:
    """Generate (or read back from the keyed cache) and label ``per_task`` chains per task."""
    from hf_trust.assets import score_reasoning

    problems = load_problems(tasks, per_task, seed)
    path = None
    if cache_dir is not None:
        settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "greedy": "shared_prefix"}
        key = chains_cache_key(model_identity(model, tokenizer), tasks, per_task, seed, settings)
        path = Path(cache_dir) / f"cot_chains-{key}.json"
        cached = _read_chains(path, key, len(problems))
        if cached is not None:
            return cached
    shots = [few_shot(t) for t in tasks]
    prompts = [build_prompt(p["question"], shots[p["spec"]]) for p in problems]
    gens = generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress)
    chains = []
    for p, (pids, oids) in zip(problems, gens):
        text = tokenizer.decode(oids, skip_special_tokens=True)
        pred = extract_answer(text)
        correct = int(score_reasoning(p["task"], pred, p["entry"]) >= 1.0)
        chains.append(Chain(p["task"], p["question"], p["answer"], pids, oids, text, pred, correct))
    if path is not None:
        try:
            atomic_write_json(path, {"key": path.stem.split("-", 1)[1], "chains": [asdict(c) for c in chains]})
        except OSError as exc:
            raise HFTrustCacheError(f"cannot write the chain cache {path}: {exc}") from None
    return chains
