"""EPEAgent example: a 3-agent financial MAS on SmolLM2-135M-Instruct, with the privacy agent C_A embedded.

    python examples/epeagent_mas.py --domain medical --questions 4

Shows the user-facing API: agents, policy from entry labels, the orchestrator, one episode's ledger, and the
Table 1 metrics with and without C_A.
"""

from __future__ import annotations

import argparse

import torch

from hf_trust import assets
from hf_trust.agents import (
    EPEOrchestrator,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    generate_questions,
    hf_chat_backend,
    make_agents,
)
from hf_trust.agents.evaluation import evaluate_mas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domain", choices=["financial", "medical"], default="financial")
    parser.add_argument("--questions", type=int, default=2, help="questions of each kind (utility, privacy MCQ/OEQ)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, tok = assets.load_smollm2()
    backend = hf_chat_backend(model, tok, max_new_tokens=args.max_new_tokens)

    # One episode, step by step.
    profiles = generate_profiles(args.domain, n_users=5, seed=args.seed)
    question = next(q for q in generate_questions(profiles, args.domain, seed=args.seed) if q["kind"] == "utility")
    user = next(p for p in profiles if p["user_id"] == question["user_id"])
    privacy_agent = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(user))
    orch = EPEOrchestrator(make_agents(args.domain, backend), privacy_agent)
    answer, ledger = orch.run(user, question)
    print(f"Q: {question['question']} {question['options']} (gold {question['answer']})\nA: {answer}")
    for e in ledger.entries:
        print(f"  ledger: {e.recipient:<26} {e.field:<28} {e.channel:<9} allowed={e.allowed}")

    for with_pa in (False, True):
        r = evaluate_mas(
            backend,
            args.domain,
            with_pa,
            n_users=5,
            n_utility=args.questions,
            n_privacy_mcq=args.questions,
            n_privacy_oeq=args.questions,
            seed=args.seed,
        )
        print(
            f"{'EPEAgent' if with_pa else 'baseline'}: "
            + ", ".join(
                f"{k}={r[k]:.3f}" for k in ("utility", "privacy_mcq", "privacy_oeq", "leakage", "permitted_recall")
            )
        )


if __name__ == "__main__":
    main()
