"""Reasoning-gym task mixtures with their scorers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional

from ..errors import HFTrustConfigError
from ._locate import package_dir


def load_reasoning_tasks(tasks: Sequence[str], size_per_task: int, seed: int = 0) -> Any:
    """reasoning-gym problems as a ``datasets.Dataset``: question, answer, task, entry (JSON of the item)."""
    package_dir("reasoning_gym")
    import reasoning_gym
    from datasets import Dataset

    if not tasks:
        raise HFTrustConfigError("tasks is empty; name at least one reasoning-gym task, e.g. 'chain_sum'.")
    rows = {"question": [], "answer": [], "task": [], "entry": []}
    for i, task in enumerate(tasks):
        try:
            ds = reasoning_gym.create_dataset(task, size=size_per_task, seed=seed + 1000 * i)
        except Exception as exc:
            raise HFTrustConfigError(
                f"reasoning-gym has no usable task {task!r}: {exc}; name a task reasoning-gym lists, e.g. 'chain_sum'."
            ) from None
        for item in ds:
            rows["question"].append(item["question"])
            rows["answer"].append(str(item["answer"]))
            rows["task"].append(task)
            rows["entry"].append(json.dumps(item, default=str))
    return Dataset.from_dict(rows)


_SCORERS: dict[str, Any] = {}


def score_reasoning(task: str, answer: Optional[str], entry: str | dict) -> float:
    """The task's own scorer (1.0 = correct) applied to a model's ``answer``."""
    import reasoning_gym

    item = json.loads(entry) if isinstance(entry, str) else entry
    if task not in _SCORERS:
        _SCORERS[task] = reasoning_gym.create_dataset(task, size=1, seed=0)
    return float(_SCORERS[task].score_answer(answer, item))
