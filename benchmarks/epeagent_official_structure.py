"""EPEAgent on the official release's profile structure (second data source), with worst-case echo agents.

    python benchmarks/epeagent_official_structure.py --users 25 --seeds 0 1 2

Profiles follow the field order and value types of the official ``user_profiles/{financial,medical}_profiles.json``
(lists, ISO-dated trades, lab results with units, empty lists; see ``hf_trust.agents.data.OFFICIAL_ORDER``) with
values drawn by our generator.  Every agent repeats its whole context (the leakiest summariser), and the
value-level detector measures what reached each agent, with and without the rule-based privacy agent.
"""

from __future__ import annotations

import argparse

import numpy as np

from hf_trust.agents import (
    DataFlowLedger,
    EPEOrchestrator,
    PrivacyEnhancingAgent,
    PrivacyPolicy,
    generate_profiles,
    make_agents,
)


def echo(messages, tools=None):
    return "\n".join(str(m.get("content", "")) for m in messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(
        "| domain | values | privacy agent | value leakage | permitted recall | canary leakage | residual leaks by form |"
    )
    print("|---|---|---|---|---|---|---|")
    for domain in ("financial", "medical"):
        for canaries in (False, True):
            for pa_on in (False, True):
                rows, forms = [], {}
                for seed in args.seeds:
                    ledger = DataFlowLedger()
                    for prof in generate_profiles(
                        domain, args.users, seed=seed, structure="official", canaries=canaries
                    ):
                        pa = PrivacyEnhancingAgent(PrivacyPolicy.from_labels(prof)) if pa_on else None
                        EPEOrchestrator(make_agents(domain, echo), pa).run(
                            prof, {"question": "Summarise."}, ledger=ledger
                        )
                    rep = ledger.report()
                    rows.append((rep.leakage, rep.permitted_recall, rep.canary_leakage))
                    if pa_on:
                        for _, _, f, fs in rep.leaks:
                            forms[f"{f}:{'+'.join(fs)}"] = forms.get(f"{f}:{'+'.join(fs)}", 0) + 1
                arr = np.asarray([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
                mean, std = np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)
                canary = "–" if np.isnan(mean[2]) else f"{mean[2]:.3f} ± {std[2]:.3f}"
                print(
                    f"| {domain} | {'canaries' if canaries else 'natural'} | {'rule-based' if pa_on else 'none'} | "
                    f"{mean[0]:.4f} ± {std[0]:.4f} | {mean[1]:.3f} ± {std[1]:.3f} | {canary} | {forms or '–'} |"
                )


if __name__ == "__main__":
    main()
