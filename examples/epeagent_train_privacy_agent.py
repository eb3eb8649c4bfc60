"""Train EPEAgent's privacy agent as a model: SmolLM2-135M-Instruct + LoRA, TRL SFT on minimal-disclosure rewrites.

    python examples/epeagent_train_privacy_agent.py --steps 40 --out privacy_agent_adapter

1. Generate training users for both domains and, from their label policies, prompt-completion rows: an upstream
   agent's message and the rewrite that keeps only what the recipient may see (``rewrite_examples``).
2. Fine-tune with TRL's ``SFTTrainer`` (loss on the rewrite tokens only) through ``train_privacy_agent``.
3. Save the LoRA adapter (atomically) and score untrained vs trained rewrites of held-out users with the
   independent value-level leakage detector.
4. Plug the trained model into ``PrivacyEnhancingAgent`` as its context-stage rewriter.
"""

from __future__ import annotations

import argparse
import random

import torch

from hf_trust import assets
from hf_trust.agents import (
    LeakageDetector,
    PrivacyAgentConfig,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    hf_chat_backend,
    make_agents,
    rewrite_examples,
    train_privacy_agent,
)
from hf_trust.atomic import atomic_directory


def score(backend, rows, profiles) -> tuple[float, float]:
    """(share of denied fields of the message still in the rewrite, share of permitted ones kept)."""
    users = {p["user_id"]: p for p in profiles}
    d_in = d_out = p_in = p_out = 0
    for r in rows:
        det = LeakageDetector(users[r["user_id"]])
        before, after = det.find(r["message"]), det.find(backend(r["prompt"]))
        for f in before:
            if f in r["denied"]:
                d_in, d_out = d_in + 1, d_out + (f in after)
            else:
                p_in, p_out = p_in + 1, p_out + (f in after)
    return d_out / max(d_in, 1), p_out / max(p_in, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--train-users", type=int, default=40)
    parser.add_argument("--eval-rows", type=int, default=6)
    parser.add_argument("--out", default="privacy_agent_adapter")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, tok = assets.load_smollm2()
    rows = []
    for domain in ("financial", "medical"):
        rows += rewrite_examples(domain, generate_profiles(domain, args.train_users, seed=1000), n_per_profile=2)
    random.Random(0).shuffle(rows)  # both domains in every stretch of steps
    held_out = generate_profiles("financial", 5, seed=0)  # other users than the training ones (seed 1000)
    eval_rows = rewrite_examples("financial", held_out, n_per_profile=2, templates="eval")[: args.eval_rows]
    # The same held-out users in the training sentence templates: separates "learned the task" from
    # "generalised to new wording".
    seen_wording = rewrite_examples("financial", held_out, n_per_profile=2, templates="train")[: args.eval_rows]

    before = score(hf_chat_backend(model, tok, max_new_tokens=64), eval_rows, held_out)
    model, log = train_privacy_agent(
        model, tok, rows, PrivacyAgentConfig(output_dir=args.out + "_trainer", max_steps=args.steps, use_cpu=True)
    )
    after = score(hf_chat_backend(model, tok, max_new_tokens=64), eval_rows, held_out)
    after_seen = score(hf_chat_backend(model, tok, max_new_tokens=64), seen_wording, held_out)
    print(f"loss: {[round(h['loss'], 3) for h in log if 'loss' in h]}")
    print("held-out users, (denied fields kept, permitted fields kept) after the rewrite:")
    print(f"  new wording: untrained {before}, trained {after}; training wording: trained {after_seen}")
    with atomic_directory(args.out) as staging:
        model.save_pretrained(staging)
    print(f"LoRA adapter saved to {args.out}")

    # The trained model as C_A's rewriter, measured alone (the deterministic pass after it is switched off).
    user = held_out[0]
    pa = PrivacyEnhancingAgent(
        PrivacyPolicy.from_labels(user),
        rewrite_backend=hf_chat_backend(model, tok, max_new_tokens=64),
        redact_after_rewrite=False,
    )
    terminal = make_agents("financial", None)[-1]
    msg = eval_rows[0]["message"]
    print(f"upstream: {msg}\nfor {terminal.name}: {pa.sanitise(msg, user, terminal)}")


if __name__ == "__main__":
    main()
