"""Orchestration overhead of the privacy agent per episode, on scripted backends (no LLM time).

Prints the per-episode time with C_A / without it, for an instant backend (worst case: the privacy layer is
all the work there is) and for a backend with a fixed simulated generation latency.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hf_trust.agents import (
    DataFlowLedger,
    EPEOrchestrator,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    generate_questions,
    make_agents,
)


def episode_times(domain: str, with_pa: bool, latency_s: float, repeats: int, seed: int) -> list[float]:
    profiles = generate_profiles(domain, n_users=25, seed=seed)
    questions = generate_questions(profiles, domain, n_per_field=5, seed=seed)
    users = {p["user_id"]: p for p in profiles}

    def answer(messages, tools=None):
        if latency_s:
            time.sleep(latency_s)
        return "I pick (b). " + messages[1]["content"][:400]  # partly echoing: gives C_A something to redact

    orch = EPEOrchestrator(
        make_agents(domain, answer),
        PrivacyEnhancingAgent(PrivacyPolicy.from_labels(profiles[0])) if with_pa else None,
    )
    out = []
    for _ in range(repeats):
        ledger = DataFlowLedger()
        t = time.perf_counter()
        for q in questions:
            orch.run(users[q["user_id"]], q, ledger=ledger)
        out.append((time.perf_counter() - t) / len(questions))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.05, help="simulated seconds per backend call")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for latency in (0.0, args.latency):
        for domain in ("financial", "medical"):
            res = {}
            for with_pa in (False, True):
                ts = episode_times(domain, with_pa, latency, args.repeats if latency == 0 else 1, seed=0)
                res[with_pa] = (statistics.median(ts), (max(ts) - min(ts)))
            ratio = res[True][0] / res[False][0]
            print(
                f"{domain:<9} latency={latency:.3f}s  per-episode off={res[False][0] * 1e3:.2f} ms "
                f"(spread {res[False][1] * 1e3:.2f})  on={res[True][0] * 1e3:.2f} ms (spread {res[True][1] * 1e3:.2f})  "
                f"ratio on/off={ratio:.3f}"
            )


if __name__ == "__main__":
    main()
