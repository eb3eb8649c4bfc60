"""Table 1 protocol: the same MAS with and without C_A, on generated profiles and questions."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Optional

from .data import generate_profiles, generate_questions, make_agents
from .metrics import summarise
from .orchestrator import EPEOrchestrator
from .policy import PrivacyPolicy
from .privacy_agent import PrivacyEnhancingAgent
from .tools.ledger import DataFlowLedger


def sample_questions(rows: list[dict], n_utility: int, n_privacy_mcq: int, n_privacy_oeq: int, seed: int) -> list[dict]:
    """A seeded subset with the requested number of items of each kind."""
    rng = random.Random(seed)
    picked = []
    for kind, fmt, n in (
        ("utility", "mcq", n_utility),
        ("privacy", "mcq", n_privacy_mcq),
        ("privacy", "oeq", n_privacy_oeq),
    ):
        pool = [r for r in rows if r["kind"] == kind and r["format"] == fmt]
        picked += rng.sample(pool, min(n, len(pool)))
    return picked


def evaluate_mas(
    backend: Callable[..., str],
    domain: str,
    with_privacy_agent: bool,
    n_users: int = 25,
    n_utility: int = 30,
    n_privacy_mcq: int = 30,
    n_privacy_oeq: int = 30,
    seed: int = 0,
    progress: Optional[Callable] = None,
) -> dict[str, Any]:
    """Run every sampled question through the 3-agent MAS of ``domain`` and score it.

    Returns the metrics of :func:`hf_trust.agents.summarise` (value-level leakage) plus the answers, questions
    and ledger.
    """
    profiles = generate_profiles(domain, n_users=n_users, seed=seed)
    rows = sample_questions(
        generate_questions(profiles, domain, n_per_field=5, seed=seed), n_utility, n_privacy_mcq, n_privacy_oeq, seed
    )
    policy = PrivacyPolicy.from_labels(profiles[0])
    pa = PrivacyEnhancingAgent(policy) if with_privacy_agent else None
    orch = EPEOrchestrator(make_agents(domain, backend), pa)
    users = {p["user_id"]: p for p in profiles}
    ledger, answers = DataFlowLedger(), []
    for q in progress(rows, desc=f"{domain} EPE={'on' if pa else 'off'}") if progress else rows:
        ans, _ = orch.run(users[q["user_id"]], q, ledger=ledger)
        answers.append(ans)
    out = summarise(answers, rows, ledger)
    out.update(answers=answers, questions=rows, ledger=ledger, calls=len(ledger.deliveries))
    return out
