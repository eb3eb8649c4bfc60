"""EPEAgent leakage three ways: our detector, AgentLeak (exported runs), and the scripted ground truth.

    python benchmarks/epeagent_agentleak.py --users 12 --out /tmp/epe_agentleak.json

Conditions: upstream agents that *summarise* (``leaky_upstream``: restate up to three fields in sentence
templates and varied number forms) or *reformat* (``reformatting_upstream``: restate them in rotating forms,
hyphen/underscore joins, spelt-out numbers, ``226k``, base64, hex, reversed, split over two agents), each with no
privacy agent and with the rule-based privacy agent.  The terminal agent reads what it is handed.  Scope: the
(episode, terminal agent, non-permitted field) triples of the messages the terminal agent receives from the
upstream agents (the context stage, where the privacy agent rewrites), over both domains.

* **ground truth**: the field's value as the scripted upstream agent wrote it (an exact string, or both halves
  of a split) occurs verbatim in what the terminal agent received;
* **ours**: :class:`hf_trust.agents.LeakageDetector` on those messages (``find`` and ``find_split``);
* **AgentLeak**: the episode exported with :func:`hf_trust.agents.to_agentleak` and analysed by
  ``agentleak.AgentLeakRunner``; a flow violation on one of those messages counts.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from typing import Any

import torch

from hf_trust.agents import (
    DataFlowLedger,
    EPEOrchestrator,
    EpisodeTrace,
    LeakageDetector,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    generate_questions,
    make_agents,
    to_agentleak,
)
from hf_trust.atomic import atomic_write_json
from hf_trust.demo.studies.epeagent import UPSTREAM_AGENTS as UPSTREAM
from hf_trust.demo.studies.epeagent import Episode, ground_truth, reader
from hf_trust.errors import HFTrustStateError

ARMS = ("no privacy agent", "rule-based")


def agentleak_hits(trace: Any, config: Any, events: set[str]) -> set[str]:
    """Fields AgentLeak reports as flow violations on the events ``events`` (ids) of ``trace``."""
    import agentleak

    result = agentleak.AgentLeakRunner(config).analyze(trace)
    if result.warnings:
        raise HFTrustStateError(f"AgentLeak ran degraded: {result.warnings}")
    event_of = {f.finding_id: f.event_id for f in result.findings}
    flows = result.policy_evaluation.flows or {}
    return {v["data_type"] for v in flows.get("violations", []) if event_of.get(v["finding_id"]) in events}


def run_condition(domain: str, upstream: str, arm: str, n_users: int, n_questions: int, seed: int) -> dict:
    profiles = generate_profiles(domain, n_users=n_users, seed=seed)
    rows = generate_questions(profiles, domain, n_per_field=5, seed=seed)
    rng = random.Random(f"{domain}-{seed}-questions")
    by_user: dict[str, list] = {}
    for r in rows:
        by_user.setdefault(r["user_id"], []).append(r)
    state = Episode()
    agents = make_agents(domain, None)
    for a in agents[:-1]:
        a.backbone = UPSTREAM[upstream](state, f"{domain}-{seed}-{upstream}-{a.name}")
    agents[-1].backbone = reader(state)
    terminal = agents[-1]
    counts = {"triples": 0, "truth": 0, "ours": 0, "agentleak": 0, "ours_not_truth": 0, "agentleak_not_truth": 0}
    counts |= {"truth_missed_by_ours": 0, "truth_missed_by_agentleak": 0}
    examples: dict[str, list[str]] = {}
    for prof in profiles:
        policy = PrivacyPolicy.from_labels(prof)
        detector = LeakageDetector(prof)
        mine = by_user.get(prof["user_id"], [])
        for q in rng.sample(mine, min(n_questions, len(mine))) if n_questions else mine:
            q = dict(q, kind="utility")  # every question is answered by the terminal agent (context stage)
            ledger = DataFlowLedger()
            state.start(prof, q)
            pa = PrivacyEnhancingAgent(policy) if arm == "rule-based" else None
            EPEOrchestrator(agents, pa).run(prof, q, ledger=ledger, trace=EpisodeTrace())
            msgs = [d for d in ledger.deliveries if d.recipient == terminal.name and d.channel == "context"]
            texts = [d.text for d in msgs]
            denied = [f for f in detector.fields if not policy.is_allowed(f, terminal.label_id)]
            denied = [f for f in denied if detector.probes[f].detectable]
            truth = ground_truth(state, texts) & set(denied)
            ours = (set(detector.find("\n".join(texts))) | set(detector.find_split(texts))) & set(denied)
            ((trace, config),) = to_agentleak(ledger)
            wanted = {
                e.event_id
                for e in trace.events
                if e.target == terminal.name and e.metadata.get("ledger_channel") == "context"
            }
            theirs = agentleak_hits(trace, config, wanted) & set(denied)
            counts["triples"] += len(denied)
            counts["truth"] += len(truth)
            counts["ours"] += len(ours)
            counts["agentleak"] += len(theirs)
            counts["ours_not_truth"] += len(ours - truth)
            counts["agentleak_not_truth"] += len(theirs - truth)
            counts["truth_missed_by_ours"] += len(truth - ours)
            counts["truth_missed_by_agentleak"] += len(truth - theirs)
            for who, missed in (
                ("ours", truth - ours),
                ("agentleak", truth - theirs),
                ("ours_not_truth", ours - truth),
            ):
                examples.setdefault(who, []).extend(f"{f}: {state.emitted[f]}" for f in sorted(missed))
    return {**counts, "missed": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=12, help="generated users per domain")
    parser.add_argument("--questions", type=int, default=0, help="episodes (questions) per user; 0: all of them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="epeagent_agentleak.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import agentleak

    t0 = time.time()
    table = {}
    for upstream in UPSTREAM:
        for arm in ARMS:
            total: dict[str, int] = {}
            for domain in ("financial", "medical"):
                c = run_condition(domain, upstream, arm, args.users, args.questions, args.seed)
                table[f"{upstream} | {arm} | {domain}"] = c
                total = {k: total.get(k, 0) + v for k, v in c.items() if k != "missed"}
            table[f"{upstream} | {arm} | both"] = total
    print(
        "| upstream agents | privacy agent | domain | triples | ground truth | ours | AgentLeak | ours ∖ truth "
        "| AgentLeak ∖ truth | truth missed by ours | truth missed by AgentLeak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, c in table.items():
        n = c["triples"]
        cells = [f"{c[k] / n:.3f}" for k in ("truth", "ours", "agentleak")]
        rest = [
            str(c[k])
            for k in ("ours_not_truth", "agentleak_not_truth", "truth_missed_by_ours", "truth_missed_by_agentleak")
        ]
        print("| " + " | ".join(key.split(" | ") + [str(n)] + cells + rest) + " |")
    atomic_write_json(
        args.out,
        {
            "args": vars(args),
            "agentleak": agentleak.__version__,
            "machine": f"{platform.machine()} {platform.processor()}, torch threads 1",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_seconds": time.time() - t0,
            "table": table,
        },
    )
    print(f"wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
